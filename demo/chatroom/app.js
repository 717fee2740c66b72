// chatroom demo page: placeholder until the demo is written.

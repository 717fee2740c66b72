#!/usr/bin/env python3
"""Cores other processes used while a scenario measured, from the load generator's JSON.

    other_cpu.py FILE

FILE holds the generator's output (its last line is the result). Prints the figure of the
relay, churn or join window, whichever the scenario has; prints nothing (exit 1) when the
file has no such figure, so each caller picks its own default.
"""

import json
import sys


def main():
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            result = json.loads(f.read().strip().splitlines()[-1])
    except (OSError, IndexError, ValueError):
        sys.exit(1)
    for section, key in (("relay", "other_cpu_util"), ("churn", "other_cpu_util"),
                         ("server", "other_cpu_util_joining")):
        value = (result.get(section) or {}).get(key)
        if value is not None:
            print(value)
            return
    sys.exit(1)


if __name__ == "__main__":
    main()

// Starts a real gateway process for a test and stops it afterwards.
//
// The gateway prints one line per listener, "<name> listening on <url> (...)"; with port 0 in
// the config that is how a test learns the ephemeral ports.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// SIGNAL_GATEWAY_BIN names another build to test; not GATEWAY_*, which the gateway reads as config.
export const BIN = process.env.SIGNAL_GATEWAY_BIN ?? path.join(ROOT, 'target', 'debug', 'signal-gateway');

/**
 * @param {{sets?: string[], env?: Record<string,string>, config?: string, prefix?: string[]}} opts
 *   `prefix`: a command that execs the gateway (e.g. `['prlimit', '--nofile=256', '--']`).
 * @returns {Promise<{urls: Record<string,string>, stop: () => Promise<number|null>, metrics: () => Promise<Record<string, number>>, child: import('node:child_process').ChildProcess, stderr: () => string}>}
 */
export async function startGateway({ sets = [], env = {}, config, prefix = [] } = {}) {
  const args = ['--config', config ?? path.join(ROOT, 'tests', 'fixtures', 'test.toml')];
  for (const s of sets) args.push('--set', s);
  const [cmd, ...cmdArgs] = [...prefix, BIN, ...args];
  const child = spawn(cmd, cmdArgs, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => { err += d; if (err.length > 1_000_000) err = err.slice(-500_000); });
  const urls = {};
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start in 15 s; stderr:\n${err}`)), 15_000);
    const lines = readline.createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      const m = /^(\S+) listening on (\S+)/.exec(line);
      if (m) urls[m[1]] = m[2];
      if (urls.admin || (m && sets.includes('admin.enabled=false'))) { clearTimeout(timer); resolve(); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`gateway exited with ${code}; stderr:\n${err}`)); });
  });
  return {
    urls,
    child,
    stderr: () => err,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    /** Counter and gauge values from /metrics, keyed as `name{labels}`. */
    async metrics() {
      const text = await (await fetch(`${urls.admin}/metrics`)).text();
      const out = {};
      for (const line of text.split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const i = line.lastIndexOf(' ');
        out[line.slice(0, i)] = Number(line.slice(i + 1));
      }
      return out;
    },
  };
}

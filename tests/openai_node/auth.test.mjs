// The OpenAI Node SDK against a real `mlxd serve` started with `--api-key`:
// a wrong key is an AuthenticationError with OpenAI's code, the right one
// is served.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';

import OpenAI from 'openai';

import { DEFAULT_MODEL, Daemon, defaultModelPath, makeWorkdir } from './daemon.mjs';

const KEY = 'sk-test-key';
let workdir;
let daemon;

before(async () => {
  workdir = makeWorkdir();
  daemon = await Daemon.start(
    workdir, ['--model', `${DEFAULT_MODEL}=${defaultModelPath()}`, '--api-key', KEY], 'node-auth',
  );
});

after(async () => {
  try {
    if (daemon) await daemon.stop();
  } finally {
    if (workdir) fs.rmSync(workdir, { recursive: true, force: true });
  }
});

test('a wrong API key is an AuthenticationError', async () => {
  const e = await daemon.client('sk-wrong').models.list().catch((err) => err);
  assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
  assert.equal(e.status, 401);
  assert.equal(e.code, 'invalid_api_key');
  await assert.rejects(
    daemon.client('sk-wrong').chat.completions.create({
      model: DEFAULT_MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1,
    }),
    OpenAI.AuthenticationError,
  );
});

test('the right API key is served', async () => {
  const ids = [];
  for await (const m of daemon.client(KEY).models.list()) ids.push(m.id);
  assert.deepEqual(ids, [DEFAULT_MODEL]);
  const r = await daemon.client(KEY).chat.completions.create({
    model: DEFAULT_MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1,
  });
  assert.equal(r.choices[0].finish_reason, 'length');
});

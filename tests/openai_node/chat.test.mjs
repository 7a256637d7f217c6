// The official OpenAI Node SDK against one real `mlxd serve` with real
// worker processes: the default model (SmolLM2, greedy, it knows Paris) for
// chat, completions, the Responses API and embeddings, and a tiny random
// checkpoint with Qwen3's tokenizer and chat template where only the
// grammar can make a forced tool call or a strict JSON schema hold.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';

import OpenAI from 'openai';

import { DEFAULT_MODEL, Daemon, defaultModelPath, makeWorkdir, synthQwen3 } from './daemon.mjs';

const QWEN = 'qwen-tiny';
const QUESTION = [{ role: 'user', content: 'What is the capital of France?' }];

let workdir;
let daemon;
let client;

before(async () => {
  workdir = makeWorkdir();
  const qwen = synthQwen3(workdir);
  daemon = await Daemon.start(
    workdir,
    ['--model', `${QWEN}=${qwen}`, '--model', `${DEFAULT_MODEL}=${defaultModelPath()}`],
    'node-main',
  );
  client = daemon.client();
});

after(async () => {
  try {
    if (daemon) await daemon.stop();
  } finally {
    if (workdir) fs.rmSync(workdir, { recursive: true, force: true });
  }
});

test('chat.completions.create answers whole and streamed with the same text', async () => {
  const request = { model: DEFAULT_MODEL, messages: QUESTION, max_tokens: 64, temperature: 0 };
  const whole = await client.chat.completions.create(request);
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.model, DEFAULT_MODEL);
  const text = whole.choices[0].message.content;
  assert.match(text, /Paris/);
  assert.equal(whole.choices[0].finish_reason, 'stop');
  assert.ok(whole.usage.prompt_tokens > 0 && whole.usage.completion_tokens > 0);
  assert.ok(daemon.workerPids().length >= 1, 'a worker process serves the model');

  const stream = await client.chat.completions.create({
    ...request, stream: true, stream_options: { include_usage: true },
  });
  let streamed = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    if (!chunk.choices.length) continue;
    streamed += chunk.choices[0].delta.content ?? '';
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  assert.equal(streamed, text);
  assert.equal(finish, 'stop');
  assert.deepEqual(usage, whole.usage);
});

const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city.',
    parameters: {
      type: 'object',
      additionalProperties: false,
      required: ['city'],
      properties: { city: { type: 'string', enum: ['Paris', 'Rome'] } },
    },
  },
};

test('a forced tool call streams as deltas that assemble into the whole call', async () => {
  const request = {
    model: QWEN,
    messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
    tools: [WEATHER],
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    max_tokens: 200,
    temperature: 0,
  };
  const whole = await client.chat.completions.create(request);
  const calls = whole.choices[0].message.tool_calls;
  assert.equal(whole.choices[0].finish_reason, 'tool_calls', JSON.stringify(whole.choices[0]));
  assert.equal(calls.length, 1);
  assert.equal(calls[0].type, 'function');
  assert.equal(calls[0].function.name, 'get_weather');
  assert.match(calls[0].id, /^call_/);
  assert.ok(['Paris', 'Rome'].includes(JSON.parse(calls[0].function.arguments).city));

  const assembled = new Map();
  let finish = null;
  for await (const chunk of await client.chat.completions.create({ ...request, stream: true })) {
    if (!chunk.choices.length) continue;
    finish = chunk.choices[0].finish_reason ?? finish;
    for (const d of chunk.choices[0].delta.tool_calls ?? []) {
      const call = assembled.get(d.index) ?? { id: '', name: '', arguments: '' };
      call.id += d.id ?? '';
      call.name += d.function?.name ?? '';
      call.arguments += d.function?.arguments ?? '';
      assembled.set(d.index, call);
    }
  }
  assert.equal(finish, 'tool_calls');
  assert.deepEqual([...assembled.keys()], [0]);
  const call = assembled.get(0);
  assert.equal(call.name, 'get_weather');
  assert.match(call.id, /^call_/);
  assert.deepEqual(JSON.parse(call.arguments), JSON.parse(calls[0].function.arguments));

  // The SDK's own stream helper assembles the same call.
  const helper = client.chat.completions.stream(request);
  const final = await helper.finalChatCompletion();
  assert.equal(final.choices[0].message.tool_calls[0].function.arguments, call.arguments);
});

const SCHEMA = {
  type: 'object',
  properties: {
    answer: { enum: ['yes', 'no', 'unsure'] },
    confidence: { type: 'integer', minimum: 0, maximum: 100 },
    scores: {
      type: 'array',
      items: { type: 'integer', minimum: -3, maximum: 3 },
      minItems: 1,
      maxItems: 3,
    },
  },
  required: ['answer', 'confidence', 'scores'],
  additionalProperties: false,
};

test('a strict json_schema response_format holds on random weights', async () => {
  for (const seed of [1, 2]) {
    const r = await client.chat.completions.create({
      model: QWEN,
      messages: [{ role: 'user', content: 'Is the sky blue? Answer with a confidence and scores.' }],
      response_format: { type: 'json_schema', json_schema: { name: 'verdict', schema: SCHEMA, strict: true } },
      max_tokens: 400,
      temperature: 0.8,
      seed,
    });
    const choice = r.choices[0];
    assert.equal(choice.finish_reason, 'stop', choice.message.content);
    const v = JSON.parse(choice.message.content);
    assert.deepEqual(Object.keys(v).sort(), ['answer', 'confidence', 'scores']);
    assert.ok(['yes', 'no', 'unsure'].includes(v.answer), v.answer);
    assert.ok(Number.isInteger(v.confidence) && v.confidence >= 0 && v.confidence <= 100);
    assert.ok(v.scores.length >= 1 && v.scores.length <= 3);
    assert.ok(v.scores.every((s) => Number.isInteger(s) && s >= -3 && s <= 3), String(v.scores));
  }
});

test('completions.create continues a prompt, whole and streamed', async () => {
  const request = { model: DEFAULT_MODEL, prompt: 'The capital of France is', max_tokens: 16, temperature: 0 };
  const whole = await client.completions.create(request);
  assert.equal(whole.object, 'text_completion');
  assert.match(whole.choices[0].text, /Paris/);
  assert.ok(whole.usage.completion_tokens > 0 && whole.usage.completion_tokens <= 16);
  let streamed = '';
  for await (const chunk of await client.completions.create({ ...request, stream: true })) {
    streamed += chunk.choices[0]?.text ?? '';
  }
  assert.equal(streamed, whole.choices[0].text);
});

test('models.list and models.retrieve', async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, 'model');
    ids.push(m.id);
  }
  assert.deepEqual(ids.sort(), [DEFAULT_MODEL, QWEN].sort());
  const m = await client.models.retrieve(DEFAULT_MODEL);
  assert.equal(m.id, DEFAULT_MODEL);
  assert.equal(m.object, 'model');
  await assert.rejects(client.models.retrieve('no-such-model'), OpenAI.NotFoundError);
});

test('responses.create answers with the default model', async () => {
  const r = await client.responses.create({
    model: DEFAULT_MODEL, input: 'What is the capital of France?', temperature: 0, max_output_tokens: 30,
  });
  assert.equal(r.object, 'response');
  assert.match(r.id, /^resp_/);
  assert.equal(r.status, 'completed');
  assert.equal(r.model, DEFAULT_MODEL);
  assert.match(r.output_text, /Paris/);
  const message = r.output.at(-1);
  assert.equal(message.type, 'message');
  assert.equal(message.role, 'assistant');
  assert.equal(message.content[0].type, 'output_text');
  assert.ok(r.usage.input_tokens > 0 && r.usage.output_tokens > 0 && r.usage.output_tokens <= 30);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
});

test('responses.stream sends the event sequence and the same text as create', async () => {
  const request = {
    model: DEFAULT_MODEL, input: 'What is the capital of France?',
    instructions: 'Answer in one sentence.', temperature: 0, max_output_tokens: 30,
  };
  const stream = client.responses.stream(request);
  const events = [];
  for await (const e of stream) events.push(e);
  const final = await stream.finalResponse();
  assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
  const kinds = events.map((e) => e.type);
  assert.deepEqual(kinds.slice(0, 4), [
    'response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
  ]);
  assert.deepEqual(kinds.slice(-4), [
    'response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed',
  ]);
  const deltas = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
  assert.equal(deltas, events.find((e) => e.type === 'response.output_text.done').text);
  assert.equal(final.status, 'completed');
  assert.equal(final.instructions, 'Answer in one sentence.');
  assert.equal(final.output_text, deltas);
  const whole = await client.responses.create(request);
  assert.equal(final.output_text, whole.output_text);
  assert.match(final.output_text, /Paris/);
});

test('embeddings.create as floats and as base64', async () => {
  const input = ['Hello', 'The capital of France'];
  const floats = await client.embeddings.create({ model: DEFAULT_MODEL, input, encoding_format: 'float' });
  assert.deepEqual(floats.data.map((d) => d.index), [0, 1]);
  assert.ok(floats.usage.prompt_tokens > 0);
  for (const d of floats.data) {
    assert.equal(d.embedding.length, 576);
    const norm = Math.hypot(...d.embedding);
    assert.ok(Math.abs(norm - 1) < 1e-5, String(norm));
  }
  assert.notDeepEqual(floats.data[0].embedding, floats.data[1].embedding);

  // Asked for base64, the SDK hands back the string the daemon sent.
  const b64 = await client.embeddings.create({ model: DEFAULT_MODEL, input, encoding_format: 'base64' });
  for (const [d, f] of b64.data.map((d, i) => [d, floats.data[i]])) {
    assert.equal(typeof d.embedding, 'string');
    const bytes = Buffer.from(d.embedding, 'base64');
    const decoded = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
    // The JSON floats are the shortest text of the same f32 values.
    assert.deepEqual(decoded, f.embedding.map(Math.fround));
  }
  // Without a format the SDK asks for base64 and decodes it to floats.
  const implicit = await client.embeddings.create({ model: DEFAULT_MODEL, input });
  assert.deepEqual(
    implicit.data.map((d) => d.embedding),
    floats.data.map((d) => d.embedding.map(Math.fround)),
  );
});

test('bad requests are BadRequestErrors naming the parameter', async () => {
  const bad = [{ type: 'function', function: { name: 'f', parameters: 'not a schema' } }];
  const e1 = await client.chat.completions
    .create({ model: QWEN, messages: QUESTION, tools: bad })
    .catch((e) => e);
  assert.ok(e1 instanceof OpenAI.BadRequestError, String(e1));
  assert.equal(e1.status, 400);
  assert.equal(e1.param, 'tools[0].function.parameters');
  const e2 = await client.embeddings
    .create({ model: DEFAULT_MODEL, input: 'a', dimensions: 0 })
    .catch((e) => e);
  assert.ok(e2 instanceof OpenAI.BadRequestError, String(e2));
  assert.equal(e2.param, 'dimensions');
  const e3 = await client.chat.completions
    .create({ model: DEFAULT_MODEL, messages: QUESTION, temperature: 5 })
    .catch((e) => e);
  assert.ok(e3 instanceof OpenAI.BadRequestError, String(e3));
  assert.equal(e3.param, 'temperature');
});

test('an unknown model is a NotFoundError', async () => {
  const e = await client.chat.completions
    .create({ model: 'no-such-model', messages: QUESTION })
    .catch((err) => err);
  assert.ok(e instanceof OpenAI.NotFoundError, String(e));
  assert.equal(e.status, 404);
  assert.equal(e.code, 'model_not_found');
  assert.equal(e.param, 'model');
  await assert.rejects(client.completions.create({ model: 'no-such-model', prompt: 'x' }), OpenAI.NotFoundError);
  await assert.rejects(client.responses.create({ model: 'no-such-model', input: 'x' }), OpenAI.NotFoundError);
});

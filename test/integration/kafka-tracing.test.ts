/**
 * Telemetry through the real broker: with the SDK started (in-memory exporter) before kafkajs is
 * imported, a send and the handling of that message share one trace, and a span opened inside
 * the handler is part of it.
 */
import assert from 'node:assert/strict';
import { register } from 'node:module';
import { it } from 'node:test';

import { trace } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';

import { shutdownTelemetry, startTelemetry, telemetryEnabled } from '../../services/shared/telemetry.ts';

register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);
const exporter = new InMemorySpanExporter();
startTelemetry({ serviceName: 'imastream-test', spanProcessors: [new SimpleSpanProcessor(exporter)] });

// Imported only now, so the instrumentation sees kafkajs load.
const { encode } = await import('../../services/shared/codec.ts');
const { createTopics, memoryLogger, testKafka, unique, waitFor } = await import('./kafka-helpers.ts');

it('is off without an OTLP endpoint', () => {
  assert.equal(telemetryEnabled({}), false);
  assert.equal(telemetryEnabled({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' }), true);
  assert.equal(
    startTelemetry({ serviceName: 'x', env: {} }),
    undefined,
    'nothing starts without an endpoint',
  );
});

it('carries the trace from producer to handler through Kafka headers', { timeout: 60_000 }, async (t) => {
  const { logger } = memoryLogger();
  const kafka = testKafka(logger);
  const topic = unique('trace');
  await createTopics(kafka, [topic, `${topic}.dl`], 1);
  t.after(() => shutdownTelemetry());

  const producer = await kafka.connectProducer();
  const value = encode('QuoteTaken', { hostId: 'h', bootId: 'b:0', seq: 1, quoteId: 'q', at: 1 });
  await producer.send(topic, [{ key: 'h', value }]);
  await producer.disconnect();

  const handled: { traceparent: string | undefined; traceId: string }[] = [];
  const group = await kafka.runGroup({
    groupId: unique('group'),
    topics: [topic],
    deadLetterTopic: `${topic}.dl`,
    handleMessage: async (m) => {
      const span = trace.getTracer('test').startSpan('handle');
      handled.push({ traceparent: m.headers?.traceparent?.toString(), traceId: span.spanContext().traceId });
      span.end();
    },
  });
  t.after(() => group.stop());
  await waitFor('the message', () => handled.length === 1);

  const sends = exporter.getFinishedSpans().filter((s) => s.kind === 3 /* PRODUCER */);
  assert.equal(sends.length, 1, 'one producer span from the kafkajs instrumentation');
  const sendTrace = sends[0]!.spanContext().traceId;
  assert.match(handled[0]!.traceparent ?? '', new RegExp(`^00-${sendTrace}-[0-9a-f]{16}-0[01]$`));
  assert.equal(handled[0]!.traceId, sendTrace, 'the handler runs inside the producer trace');
});

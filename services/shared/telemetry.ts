/**
 * OpenTelemetry for services: traces of Kafka (kafkajs) and Redis (ioredis) calls, exported over
 * OTLP (protobuf). Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set; with it off the API calls in
 * our code (trace-headers.ts) are no-ops.
 *
 * kafkajs and ioredis are CommonJS modules imported from ESM, so their instrumentations only see
 * them through the import-in-the-middle loader hook, and only if the SDK starts before they are
 * first imported. Start services with the preload:
 *
 *   OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 \
 *     node --import tsx --import ./services/shared/telemetry-register.ts services/replayer/main.ts
 *
 * Trace context crosses Kafka in W3C `traceparent`/`tracestate` headers: the kafkajs
 * instrumentation adds them on send, and the adapter runs each handler under the context of the
 * message it handles (kafka-group.ts), so Redis calls made there join the producer's trace.
 */

import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { KafkaJsInstrumentation } from '@opentelemetry/instrumentation-kafkajs';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';

export { extractTraceContext, injectTraceHeaders } from './trace-headers.ts';

/** True when an OTLP endpoint is configured. */
export function telemetryEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

export interface StartTelemetryOptions {
  serviceName: string;
  env?: NodeJS.ProcessEnv;
  /** Replaces the OTLP exporter (tests pass an in-memory one); starts even with no endpoint. */
  spanProcessors?: SpanProcessor[];
}

export interface Telemetry {
  /** Flushes pending spans and stops; call during graceful shutdown. */
  shutdown(): Promise<void>;
}

let started: Telemetry | undefined;

/** Starts the SDK, or returns undefined when telemetry is off. Call once per process. */
export function startTelemetry({
  serviceName,
  env,
  spanProcessors,
}: StartTelemetryOptions): Telemetry | undefined {
  if (!spanProcessors && !telemetryEnabled(env)) return undefined;
  if (started) return started;

  const sdk = new NodeSDK({
    serviceName,
    spanProcessors: spanProcessors ?? [new BatchSpanProcessor(new OTLPTraceExporter())],
    instrumentations: [new KafkaJsInstrumentation(), new IORedisInstrumentation()],
  });
  sdk.start();
  started = { shutdown: () => sdk.shutdown() };

  return started;
}

/** Flushes and stops the SDK if this process started it; a no-op otherwise. Use as a closer. */
export async function shutdownTelemetry(): Promise<void> {
  const current = started;
  started = undefined;
  await current?.shutdown();
}

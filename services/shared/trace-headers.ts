/**
 * W3C trace context through Kafka headers (`traceparent`, `tracestate`). Uses only the
 * OpenTelemetry API: with no SDK started (telemetry off) both helpers do nothing, at no cost.
 */
import { type Context, context, propagation, ROOT_CONTEXT, type TextMapGetter } from '@opentelemetry/api';
import type { IHeaders } from 'kafkajs';

const getter: TextMapGetter<IHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get(carrier, key) {
    const value = carrier[key];
    const first = Array.isArray(value) ? value[0] : value;
    return first === undefined ? undefined : first.toString();
  },
};

/** Adds the trace context of `ctx` (the active one by default) to outgoing `headers`. */
export function injectTraceHeaders(
  headers: Record<string, string | Buffer>,
  ctx: Context = context.active(),
): void {
  propagation.inject(ctx, headers, {
    set: (carrier, key, value) => Object.assign(carrier, { [key]: value }),
  });
}

/** The trace context a producer put in `headers`, for running the handler under it. */
export function extractTraceContext(headers: IHeaders | undefined): Context {
  return headers ? propagation.extract(ROOT_CONTEXT, headers, getter) : ROOT_CONTEXT;
}

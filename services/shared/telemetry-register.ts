/**
 * Preload (`node --import ./services/shared/telemetry-register.ts …`): when
 * OTEL_EXPORTER_OTLP_ENDPOINT is set, installs the import-in-the-middle hook so ESM imports of
 * kafkajs and ioredis can be instrumented, then starts the SDK before the service's own imports
 * run. Service name from OTEL_SERVICE_NAME (default `imastream`). Does nothing otherwise.
 * Services pass `shutdownTelemetry` (telemetry.ts) as their last closer to flush spans on exit.
 */
import { register } from 'node:module';

import { startTelemetry, telemetryEnabled } from './telemetry.ts';

if (telemetryEnabled()) {
  register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);
  startTelemetry({ serviceName: process.env.OTEL_SERVICE_NAME ?? 'imastream' });
}

import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one KMS instance, in its own registry (tests run several). */
export class Metrics {
  readonly registry = new Registry();
  readonly requests = new Histogram({
    name: 'tre_kms_http_request_duration_seconds',
    help: 'HTTP request duration by route and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });
  readonly decisions = new Counter({
    name: 'tre_kms_policy_decisions_total',
    help: 'Policy decisions by action and result (allow or the denial reason)',
    labelNames: ['action', 'result'],
    registers: [this.registry],
  });
  /** Single file-key releases answered 2xx (each is logged at debug level only). */
  readonly keyReleases = new Counter({
    name: 'tre_kms_key_releases_total',
    help: 'Single file keys released',
    registers: [this.registry],
  });
  readonly auditEntries = new Counter({
    name: 'tre_kms_audit_entries_total',
    help: 'Audit entries appended by this process',
    registers: [this.registry],
  });

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry, prefix: 'tre_kms_' });
  }
}

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class BridgeMetrics {
  readonly registry = new Registry();
  readonly spawns = new Counter({
    name: 'tre_bridge_spawns_total',
    help: 'Session starts by outcome (submitted, refused, failed)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly submitSeconds = new Histogram({
    name: 'tre_bridge_submit_seconds',
    help: 'Time from the start request to the job being submitted',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
    registers: [this.registry],
  });
  readonly active = new Gauge({
    name: 'tre_bridge_active_sessions',
    help: 'Sessions with a job that has not ended',
    registers: [this.registry],
  });
  readonly pickups = new Counter({
    name: 'tre_bridge_pickups_total',
    help: 'Pickup attempts by outcome',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  constructor(defaults = false) {
    if (defaults) collectDefaultMetrics({ register: this.registry });
  }
}

import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one proxy; each proxy has its own registry so several can coexist. */
export class ProxyMetrics {
  readonly registry = new Registry();
  readonly connections = new Counter({
    name: 'desktop_proxy_connections_total',
    help: 'WebSocket sessions proxied to the VNC server',
    registers: [this.registry],
  });
  readonly active = new Gauge({
    name: 'desktop_proxy_active_connections',
    help: 'WebSocket sessions open now',
    registers: [this.registry],
  });
  readonly bytes = new Counter({
    name: 'desktop_proxy_bytes_total',
    help: 'Bytes forwarded after filtering',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
  readonly filtered = new Counter({
    name: 'desktop_proxy_filtered_messages_total',
    help: 'RFB messages or encodings removed by the clipboard filter',
    labelNames: ['direction', 'kind'] as const,
    registers: [this.registry],
  });
  readonly refusals = new Counter({
    name: 'desktop_proxy_refusals_total',
    help: 'Connection attempts refused',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly disconnects = new Counter({
    name: 'desktop_proxy_disconnects_total',
    help: 'Sessions ended, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry });
  }
}

/**
 * One /metrics for the whole service when `workers` > 1. The worker that is scraped asks the
 * primary, which collects every worker's registry with prom-client's AggregatorRegistry
 * (counters and histograms summed, process metrics by prom-client's per-metric aggregators)
 * and answers with the text. Without this a scrape saw only the worker it happened to reach.
 */
import cluster from 'node:cluster';
import { AggregatorRegistry, type Registry } from 'prom-client';

const REQ = 'tre-kms:metrics-req';
const RES = 'tre-kms:metrics-res';
const TIMEOUT_MS = 5000;

interface Message {
  type?: unknown;
  id?: unknown;
  text?: unknown;
  error?: unknown;
}

/** In the primary: answers each worker's request with the aggregate of all workers. */
export function serveClusterMetrics(): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, msg: Message) => {
    if (msg?.type !== REQ) return;
    aggregator.clusterMetrics().then(
      (text) => worker.send({ type: RES, id: msg.id, text }),
      (e: unknown) => worker.send({ type: RES, id: msg.id, error: (e as Error).message }),
    );
  });
}

/**
 * In a worker: offers `registry` to the primary's collection and returns what fetches the
 * aggregate through the primary.
 */
export function clusterMetricsClient(registry: Registry): () => Promise<string> {
  AggregatorRegistry.setRegistries(registry);
  // Constructing one is what makes prom-client answer the primary's collection requests.
  new AggregatorRegistry();
  let next = 0;
  const waiting = new Map<
    number,
    { resolve: (t: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
  >();
  process.on('message', (msg: Message) => {
    if (msg?.type !== RES || typeof msg.id !== 'number') return;
    const w = waiting.get(msg.id);
    if (!w) return;
    waiting.delete(msg.id);
    clearTimeout(w.timer);
    if (typeof msg.text === 'string') w.resolve(msg.text);
    else w.reject(new Error(`metrics collection failed: ${String(msg.error)}`));
  });
  return () =>
    new Promise((resolve, reject) => {
      const id = next++;
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(new Error('the primary did not answer the metrics request'));
      }, TIMEOUT_MS);
      waiting.set(id, { resolve, reject, timer });
      process.send!({ type: REQ, id });
    });
}

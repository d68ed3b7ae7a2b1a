/**
 * Progress on stderr: one overall bar (bytes, MB/s, ETA) and one bar per file in flight,
 * drawn only when stderr is a terminal so logs and pipes stay clean.
 */
import cliProgress from 'cli-progress';

export interface Progress {
  start(totalBytes: number, doneBytes: number, files: number): void;
  fileStarted(key: string, name: string, bytes: number): void;
  fileProgress(key: string, sentBytes: number): void;
  fileDone(key: string): void;
  stop(): void;
}

export const silentProgress: Progress = {
  start: () => undefined,
  fileStarted: () => undefined,
  fileProgress: () => undefined,
  fileDone: () => undefined,
  stop: () => undefined,
};

const MB = 1024 * 1024;

class BarProgress implements Progress {
  private readonly multi = new cliProgress.MultiBar(
    {
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: false,
      format:
        '{name} |{bar}| {percentage}% {valueMB}/{totalMB} MiB {speed} MB/s ETA {eta_formatted}',
      autopadding: true,
    },
    cliProgress.Presets.shades_classic,
  );
  private overall: cliProgress.SingleBar | undefined;
  private readonly bars = new Map<
    string,
    { bar: cliProgress.SingleBar; sent: number; total: number }
  >();
  private done = 0;
  private t0 = Date.now();
  private doneAtStart = 0;
  private filesDone = 0;
  private files = 0;
  private totalBytes = 1;

  private payload(name: string, value: number, total: number, since: number, base: number) {
    const secs = Math.max(0.001, (Date.now() - since) / 1000);
    return {
      name,
      valueMB: (value / MB).toFixed(1),
      totalMB: (total / MB).toFixed(1),
      speed: ((value - base) / MB / secs).toFixed(1),
    };
  }

  start(totalBytes: number, doneBytes: number, files: number): void {
    this.t0 = Date.now();
    this.done = doneBytes;
    this.doneAtStart = doneBytes;
    this.files = files;
    this.totalBytes = Math.max(1, totalBytes);
    this.overall = this.multi.create(
      Math.max(1, totalBytes),
      doneBytes,
      this.payload('total', doneBytes, totalBytes, this.t0, doneBytes),
    );
  }

  private refresh(): void {
    const inFlight = [...this.bars.values()].reduce((a, b) => a + b.sent, 0);
    const v = this.done + inFlight;
    const total = this.totalBytes;
    this.overall?.update(
      v,
      this.payload(
        `total ${this.filesDone}/${this.files} files`,
        v,
        total,
        this.t0,
        this.doneAtStart,
      ),
    );
  }

  fileStarted(key: string, name: string, bytes: number): void {
    const short = name.length > 30 ? '…' + name.slice(-29) : name;
    const bar = this.multi.create(
      Math.max(1, bytes),
      0,
      this.payload(short, 0, bytes, Date.now(), 0),
    );
    this.bars.set(key, { bar, sent: 0, total: bytes });
  }

  fileProgress(key: string, sentBytes: number): void {
    const b = this.bars.get(key);
    if (!b) return;
    b.sent = sentBytes;
    b.bar.update(sentBytes);
    this.refresh();
  }

  fileDone(key: string): void {
    const b = this.bars.get(key);
    if (b) {
      this.done += b.total;
      this.multi.remove(b.bar);
      this.bars.delete(key);
    }
    this.filesDone++;
    this.refresh();
  }

  stop(): void {
    this.multi.stop();
  }
}

export function createProgress(enabled = process.stderr.isTTY === true): Progress {
  return enabled ? new BarProgress() : silentProgress;
}

/**
 * The bridge's state in SQLite: sessions and their progress events. Everything needed to find a
 * job again after a restart lives here; secrets handed to the job (the pickup) never do.
 */
import Database from 'better-sqlite3';

export type SessionState =
  'submitting' | 'pending' | 'running' | 'ready' | 'stopping' | 'stopped' | 'failed';

export const ACTIVE_STATES: readonly SessionState[] = [
  'submitting',
  'pending',
  'running',
  'ready',
  'stopping',
];

export interface SessionRecord {
  id: string;
  user: string;
  serverName: string;
  baseUrl: string;
  project: string;
  executor: string;
  jobId: string | null;
  /** Executor-specific facts (e.g. the local executor's process id and start time), JSON. */
  executorData: string | null;
  state: SessionState;
  message: string;
  agentHost: string | null;
  agentPort: number | null;
  /** Authenticates the gateway to the job agent; lives as long as the job. */
  agentSecret: string;
  timeLimitMinutes: number;
  /** The access window's end, ISO 8601; null when the membership has none. */
  endsAt: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface SessionEvent {
  seq: number;
  at: string;
  state: SessionState;
  progress: number;
  message: string;
}

interface Row {
  id: string;
  user: string;
  server_name: string;
  base_url: string;
  project: string;
  executor: string;
  job_id: string | null;
  executor_data: string | null;
  state: SessionState;
  message: string;
  agent_host: string | null;
  agent_port: number | null;
  agent_secret: string;
  time_limit_minutes: number;
  ends_at: string | null;
  created_at: string;
  updated_at: string;
}

function fromRow(r: Row): SessionRecord {
  return {
    id: r.id,
    user: r.user,
    serverName: r.server_name,
    baseUrl: r.base_url,
    project: r.project,
    executor: r.executor,
    jobId: r.job_id,
    executorData: r.executor_data,
    state: r.state,
    message: r.message,
    agentHost: r.agent_host,
    agentPort: r.agent_port,
    agentSecret: r.agent_secret,
    timeLimitMinutes: r.time_limit_minutes,
    endsAt: r.ends_at,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY,
  user TEXT NOT NULL,
  server_name TEXT NOT NULL,
  base_url TEXT NOT NULL,
  project TEXT NOT NULL,
  executor TEXT NOT NULL,
  job_id TEXT,
  executor_data TEXT,
  state TEXT NOT NULL,
  message TEXT NOT NULL DEFAULT '',
  agent_host TEXT,
  agent_port INTEGER,
  agent_secret TEXT NOT NULL,
  time_limit_minutes INTEGER NOT NULL,
  ends_at TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_state ON sessions(state);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user, server_name);
CREATE TABLE IF NOT EXISTS events (
  session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  at TEXT NOT NULL,
  state TEXT NOT NULL,
  progress INTEGER NOT NULL,
  message TEXT NOT NULL,
  PRIMARY KEY (session_id, seq)
);
`;

export class SessionStore {
  private readonly db: Database.Database;

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
  }

  close(): void {
    this.db.close();
  }

  insert(s: Omit<SessionRecord, 'createdAt' | 'updatedAt'>): SessionRecord {
    const now = new Date().toISOString();
    this.db
      .prepare(
        `INSERT INTO sessions (id, user, server_name, base_url, project, executor, job_id,
           executor_data, state, message, agent_host, agent_port, agent_secret,
           time_limit_minutes, ends_at, created_at, updated_at)
         VALUES (@id, @user, @serverName, @baseUrl, @project, @executor, @jobId, @executorData,
           @state, @message, @agentHost, @agentPort, @agentSecret, @timeLimitMinutes, @endsAt,
           @now, @now)`,
      )
      .run({ ...s, now });
    return this.get(s.id) as SessionRecord;
  }

  get(id: string): SessionRecord | undefined {
    const row = this.db.prepare('SELECT * FROM sessions WHERE id = ?').get(id) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  /** The user's session with that server name that has not ended, if any. */
  findActive(user: string, serverName: string): SessionRecord | undefined {
    const row = this.db
      .prepare(
        `SELECT * FROM sessions WHERE user = ? AND server_name = ?
           AND state IN (${ACTIVE_STATES.map(() => '?').join(',')})
         ORDER BY created_at DESC LIMIT 1`,
      )
      .get(user, serverName, ...ACTIVE_STATES) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  listActive(): SessionRecord[] {
    const rows = this.db
      .prepare(`SELECT * FROM sessions WHERE state IN (${ACTIVE_STATES.map(() => '?').join(',')})`)
      .all(...ACTIVE_STATES) as Row[];
    return rows.map(fromRow);
  }

  /** The ready session whose base URL is the longest prefix of `path`. */
  routeFor(path: string): SessionRecord | undefined {
    const row = this.db
      .prepare(
        `SELECT * FROM sessions WHERE state = 'ready' AND agent_port IS NOT NULL
           AND substr(?, 1, length(base_url)) = base_url
         ORDER BY length(base_url) DESC LIMIT 1`,
      )
      .get(path) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  update(
    id: string,
    fields: Partial<
      Pick<
        SessionRecord,
        'jobId' | 'executorData' | 'state' | 'message' | 'agentHost' | 'agentPort'
      >
    >,
  ): SessionRecord {
    const columns: Record<string, string> = {
      jobId: 'job_id',
      executorData: 'executor_data',
      state: 'state',
      message: 'message',
      agentHost: 'agent_host',
      agentPort: 'agent_port',
    };
    const sets = Object.keys(fields).map((k) => `${columns[k]} = @${k}`);
    this.db
      .prepare(`UPDATE sessions SET ${[...sets, 'updated_at = @now'].join(', ')} WHERE id = @id`)
      .run({ ...fields, id, now: new Date().toISOString() });
    const s = this.get(id);
    if (!s) throw new Error(`session ${id} vanished`);
    return s;
  }

  addEvent(
    sessionId: string,
    state: SessionState,
    progress: number,
    message: string,
  ): SessionEvent {
    const at = new Date().toISOString();
    const tx = this.db.transaction(() => {
      const last = this.db
        .prepare('SELECT MAX(seq) AS seq FROM events WHERE session_id = ?')
        .get(sessionId) as { seq: number | null };
      const seq = (last.seq ?? 0) + 1;
      this.db
        .prepare(
          'INSERT INTO events (session_id, seq, at, state, progress, message) VALUES (?, ?, ?, ?, ?, ?)',
        )
        .run(sessionId, seq, at, state, progress, message);
      return seq;
    });
    return { seq: tx(), at, state, progress, message };
  }

  events(sessionId: string, after = 0): SessionEvent[] {
    return this.db
      .prepare(
        'SELECT seq, at, state, progress, message FROM events WHERE session_id = ? AND seq > ? ORDER BY seq',
      )
      .all(sessionId, after) as SessionEvent[];
  }
}

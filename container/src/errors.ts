/** A failure the agent reports to the bridge as is; its message never holds a secret. */
export class AgentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AgentError';
  }
}

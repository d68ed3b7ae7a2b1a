/** An error with an HTTP status and a stable code; `reason` names a failed policy condition. */
export class KmsError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
    this.name = 'KmsError';
  }
}

export const notFound = (what: string): KmsError =>
  new KmsError(404, 'not_found', `${what} not found`);
export const conflict = (code: string, message: string): KmsError =>
  new KmsError(409, code, message);
export const badRequest = (code: string, message: string): KmsError =>
  new KmsError(400, code, message);

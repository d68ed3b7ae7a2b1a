/**
 * Errors the CLI turns into exit codes. The codes are part of the interface (scripts rely on
 * them) and are listed in the README.
 */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  auth: 3,
  refusedInput: 4,
  unavailable: 5,
  verification: 6,
  wrongKey: 7,
  notReleased: 8,
  interrupted: 130,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export class TreError extends Error {
  constructor(
    readonly exitCode: ExitCode,
    message: string,
  ) {
    super(message);
    this.name = 'TreError';
  }
}

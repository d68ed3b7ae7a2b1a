/**
 * Headers the ingress adds to tus. A last chunk may carry the file digest (see units.ts); the
 * server then verifies and stages the file in that request and names the upload's state in
 * its answer.
 */
export const DIGEST_HEADER = 'tre-digest';
export const STATE_HEADER = 'tre-upload-state';

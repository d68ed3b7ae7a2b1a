/** HTTP routes of the egress workflow: thin translations onto {@link Egress}. */
import type { Request, Response } from 'express';
import type { Egress } from './egress.js';
import type { HubUser } from './kms.js';
import type { RouteTable } from './openapi.js';

type Wrap = (
  fn: (req: Request, res: Response) => unknown,
) => (req: Request, res: Response, next: (e?: unknown) => void) => void;

export function egressRoutes(r: RouteTable, egress: Egress, h: Wrap): void {
  const u = (req: Request): HubUser => req.user!;
  const p = (req: Request): string => String(req.params.projectId);
  const id = (req: Request): number => Number(req.params.requestId);
  const base = '/projects/:projectId/egress';
  r.post(
    base,
    h((req, res) => res.status(201).json(egress.create(u(req), p(req), req.body.title))),
  );
  r.get(
    base,
    h((req, res) => res.json(egress.list(u(req), p(req)))),
  );
  r.get(
    `${base}/:requestId`,
    h((req, res) => res.json(egress.get(u(req), p(req), id(req)))),
  );
  r.put(
    `${base}/:requestId/files`,
    h((req, res) => res.json(egress.putFiles(u(req), p(req), id(req), req.body.files))),
  );
  r.post(
    `${base}/:requestId/justifications`,
    h((req, res) => res.json(egress.justify(u(req), p(req), id(req), req.body))),
  );
  r.post(
    `${base}/:requestId/submit`,
    h((req, res) => res.json(egress.submit(u(req), p(req), id(req)))),
  );
  r.post(
    `${base}/:requestId/withdraw`,
    h((req, res) => res.json(egress.withdraw(u(req), p(req), id(req)))),
  );
  r.get(
    `${base}/:requestId/files/:fileId/review-key`,
    h((req, res) => res.json(egress.reviewKey(u(req), p(req), id(req), String(req.params.fileId)))),
  );
  r.post(
    `${base}/:requestId/votes`,
    h((req, res) => res.json(egress.vote(u(req), p(req), id(req), req.body))),
  );
  r.post(
    `${base}/:requestId/comments`,
    h((req, res) => res.status(201).json(egress.comment(u(req), p(req), id(req), req.body))),
  );
  r.post(
    `${base}/:requestId/decision`,
    h((req, res) => res.json(egress.decide(u(req), p(req), id(req), req.body.decision))),
  );
  r.post(
    `${base}/:requestId/release`,
    h((req, res) => res.json(egress.release(u(req), p(req), id(req)))),
  );
  r.post(
    `${base}/:requestId/revoke`,
    h((req, res) => res.json(egress.revoke(u(req), p(req), id(req)))),
  );
}

/**
 * The API server double's wire format: JSON request bodies in, JSON objects and
 * `Status` failures out, as the real API server writes them.
 */
import type http from 'node:http';
import type { Resource } from './resources.js';

/** a request the server refuses: answered as a `Status` with this code and reason */
export class HttpError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export function statusBody(code: number, reason: string, message: string, details?: Record<string, unknown>) {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

export function notFound(res: Resource, name: string): HttpError {
  return new HttpError(404, 'NotFound', `${res} "${name}" not found`, { name, kind: res });
}

/** body: an object, or a string that already is its JSON */
export function sendJson(res: http.ServerResponse, code: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(code, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-cache, private',
  });
  res.end(text);
}

/** answers a failed request with its `Status` (any other error is a 500); a response already under way is cut */
export function sendError(res: http.ServerResponse, err: unknown): void {
  const e =
    err instanceof HttpError
      ? err
      : new HttpError(500, 'InternalError', `internal error: ${err instanceof Error ? err.message : String(err)}`);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, e.code, statusBody(e.code, e.reason, e.message, e.details));
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 32 << 20) {
        reject(new HttpError(413, 'RequestEntityTooLarge', 'request body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const text = await readBody(req);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new HttpError(400, 'BadRequest', `invalid JSON body: ${err instanceof Error ? err.message : String(err)}`);
  }
}

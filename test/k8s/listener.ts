/**
 * The API server double's socket: an HTTP or HTTPS server on 127.0.0.1 that
 * tracks its connections, so that closing it ends every one of them at once.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { sendError } from './http.js';

export type RequestHandler = (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>;

export class Listener {
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: http.Server,
    readonly port: number,
  ) {}

  /** listens on port (0: any free port); a handler's error is answered as a `Status` */
  static async open(port: number, tls: { key: string; cert: string } | undefined, handle: RequestHandler): Promise<Listener> {
    // an https.Server is an http.Server as far as this class is concerned (same request/response objects)
    const server = tls
      ? (https.createServer({ key: tls.key, cert: tls.cert, noDelay: true }) as unknown as http.Server)
      : http.createServer({ noDelay: true });
    server.keepAliveTimeout = 30_000;
    const bound = await new Promise<number>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      server.once('error', onError);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', onError);
        resolve((server.address() as AddressInfo).port);
      });
    });
    const listener = new Listener(server, bound);
    listener.attach(handle);
    return listener;
  }

  /** stops listening and destroys every connection */
  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await closed;
  }

  private attach(handle: RequestHandler): void {
    const server = this.server;
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('request', (req, res) => {
      handle(req, res).catch((err: unknown) => {
        sendError(res, err);
      });
    });
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
  }
}

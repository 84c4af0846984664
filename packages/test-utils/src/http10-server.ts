import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';

/** Options of {@link startHttp10Server}. */
export interface Http10ServerOptions {
  /** Send `Content-Length` (Python's `http.server` does for files); without it the body ends where the connection does. */
  contentLength: boolean;
}

/** A request as the server saw it. */
export interface Http10Request {
  method: string;
  path: string;
  /** The `Range` header, which this server ignores as Python's `http.server` does. */
  range: string | undefined;
}

/** A running {@link startHttp10Server}. */
export interface Http10Server {
  url(path: string): string;
  requests: Http10Request[];
  /**
   * Resolves once the server has handed the whole answer to the latest GET (or the next, if none came yet) to the
   * kernel and shut its side of the connection: from then on the client holds the rest of the body and its end.
   */
  sent(): Promise<void>;
  close(): Promise<void>;
}

/**
 * An HTTP/1.0 file server written on a raw socket, answering as Python's `http.server` does: one request per
 * connection, `Range` ignored (200 and the whole file), the body written at once and the connection closed behind
 * it, whatever the client is still reading. Unknown paths get 404.
 */
export async function startHttp10Server(
  files: ReadonlyMap<string, Buffer>,
  options: Http10ServerOptions,
): Promise<Http10Server> {
  const requests: Http10Request[] = [];
  const sockets = new Set<Socket>();
  let latest: Promise<void> | undefined;
  let waiting: PromiseWithResolvers<void> | undefined;
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let head = '';
    const onData = (data: Buffer) => {
      head += data.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      const [requestLine = '', ...lines] = head.split('\r\n');
      const [method = '', target = '/'] = requestLine.split(' ');
      const range = lines.find((line) => /^range:/i.test(line))?.replace(/^range:\s*/i, '');
      const path = new URL(target, 'http://x').pathname;
      requests.push({ method, path, range });
      const body = files.get(path);
      if (body === undefined) {
        socket.end('HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      const length = options.contentLength ? `Content-Length: ${body.length}\r\n` : '';
      socket.write(`HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n${length}\r\n`);
      if (method === 'HEAD') {
        socket.end();
        return;
      }
      socket.end(body);
      latest = new Promise<void>((resolve) => {
        socket.once('finish', resolve);
        socket.once('close', resolve);
      });
      waiting?.resolve(latest);
      waiting = undefined;
    };
    socket.on('data', onData);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    requests,
    sent: () => latest ?? (waiting ??= Promise.withResolvers<void>()).promise,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

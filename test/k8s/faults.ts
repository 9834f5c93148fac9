/**
 * Injected failures: resources whose every request fails with a given HTTP
 * status, and a failing API discovery. (Compaction, dropped watches and restarts
 * are the store's, the watches' and the listener's own operations.)
 */
import { HttpError } from './http.js';
import type { Resource } from './resources.js';
import type { Watches } from './watch.js';

export class Faults {
  private readonly failing = new Map<Resource, number>();
  private discoveryFailing: number | undefined;

  constructor(private readonly watches: Watches) {}

  /** every request for res fails with code, and its open watches end; undefined: answer again */
  failResource(res: Resource, code: number | undefined): void {
    if (code === undefined) this.failing.delete(res);
    else {
      this.failing.set(res, code);
      this.watches.destroy(res);
    }
  }

  /** discovery fails with code; undefined: answer again */
  failDiscovery(code: number | undefined): void {
    this.discoveryFailing = code;
  }

  /** throws res's injected failure, if any */
  checkResource(res: Resource): void {
    const failing = this.failing.get(res);
    if (failing) throw new HttpError(failing, failing === 403 ? 'Forbidden' : 'InternalError', `${res} is failing (test)`);
  }

  /** throws the injected discovery failure, if any */
  checkDiscovery(): void {
    if (this.discoveryFailing) throw new HttpError(this.discoveryFailing, 'InternalError', 'discovery is failing (test)');
  }
}

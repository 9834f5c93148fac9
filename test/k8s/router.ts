/**
 * Request paths → the resource, namespace, name and subresource they address,
 * as the real API server lays them out (`/api/v1/namespaces/{ns}/pods/{name}`,
 * `/apis/<group>/<version>/...`, the legacy `/watch/` prefix). Pure.
 */
import { GROUP_PREFIXES, RESOURCES, RESOURCE_NAMES, plural, type Resource } from './resources.js';

export interface Route {
  res: Resource;
  ns?: string;
  name?: string;
  subresource?: string;
  watchPrefix: boolean;
}

/** the route of a path, or null when it addresses no resource of the double */
export function route(pathname: string): Route | null {
  const prefix = GROUP_PREFIXES.find((p) => pathname === p || pathname.startsWith(p + '/'));
  if (!prefix) return null;
  let segs: string[];
  try {
    segs = pathname
      .slice(prefix.length)
      .split('/')
      .filter((s) => s !== '')
      .map((s) => decodeURIComponent(s));
  } catch {
    return null;
  }
  let watchPrefix = false;
  if (segs[0] === 'watch') {
    watchPrefix = true;
    segs = segs.slice(1);
  }
  const inGroup = (seg: string): Resource | undefined => RESOURCE_NAMES.find((r) => plural(r) === seg && RESOURCES[r].prefix === prefix);

  const [a, b, c, d, e, ...rest] = segs;
  if (a === undefined || rest.length > 0) return null;
  const rc = c === undefined ? undefined : inGroup(c);
  if (a === 'namespaces' && b !== undefined && rc && RESOURCES[rc].namespaced) {
    // /namespaces/{ns}/{res}[/{name}[/{sub}]]
    if (d === undefined) return { res: rc, ns: b, watchPrefix };
    return { res: rc, ns: b, name: d, subresource: e, watchPrefix };
  }
  const ra = inGroup(a);
  if (!ra || d !== undefined) return null;
  if (ra !== a) return b === undefined ? { res: ra, watchPrefix } : null;
  if (a === 'namespaces') {
    if (b === undefined) return { res: a, watchPrefix };
    if (c !== undefined && !['status', 'finalize'].includes(c)) return null;
    return { res: a, name: b, subresource: c, watchPrefix };
  }
  if (!RESOURCES[ra].namespaced) {
    // a cluster-scoped resource: /{res}[/{name}[/status]]
    if (b === undefined) return { res: ra, watchPrefix };
    if (c !== undefined && c !== 'status') return null;
    return { res: ra, name: b, subresource: c, watchPrefix };
  }
  if (b !== undefined) return null; // /pods/{name} without a namespace does not exist
  return { res: a, watchPrefix };
}

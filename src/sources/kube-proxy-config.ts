// What this node's kube-proxy runs with, where podwarp must follow it: today
// `masqueradeAll` (kube-proxy masquerades every connection to a Service, so
// the backend sees the node's address; a connect()-time translation keeps
// the pod's, so podwarp leaves every Service to kube-proxy then).
//
// Read from kube-proxy's own `/configz` on its metrics address (default
// 127.0.0.1:10249; the agent runs in the host's network namespace): the
// configuration kube-proxy actually runs with, flags and config file merged,
// whatever installed it. kube-proxy 1.36 serves its v1alpha1 configuration
// there, `{"kubeproxy.config.k8s.io": {"mode": "nftables", "iptables":
// {"masqueradeAll": false, …}, …}}` (read from a real kube-proxy 1.36 in the
// real-cluster e2e); the field may move to `linux.masqueradeAll` (v1alpha2)
// and an internal configuration would spell it with Go's capitals, so every
// place and spelling is read.

export interface KubeProxyConfig {
  masqueradeAll: boolean;
  /** kube-proxy's proxy mode, when it says (iptables, nftables, ipvs). */
  mode?: string;
}

/** How the agent decides: `auto` reads /configz, `true`/`false` are the operator's word. */
export type MasqueradeAllSetting = 'auto' | boolean;

export const DEFAULT_CONFIGZ = 'http://127.0.0.1:10249/configz';

const field = (o: unknown, name: string): unknown => {
  if (!o || typeof o !== 'object') return undefined;
  const key = Object.keys(o).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : (o as Record<string, unknown>)[key];
};

/** The body of kube-proxy's /configz → its configuration; throws when it is not one. */
export function parseConfigz(body: string): KubeProxyConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch {
    throw new Error('not JSON');
  }
  const cfg = field(doc, 'kubeproxy.config.k8s.io');
  if (!cfg || typeof cfg !== 'object') throw new Error('no "kubeproxy.config.k8s.io" section');
  const found = [field(field(cfg, 'linux'), 'masqueradeAll'), field(field(cfg, 'iptables'), 'masqueradeAll'), field(cfg, 'masqueradeAll')];
  const flags = found.filter((v) => v !== undefined);
  if (!flags.length || flags.some((v) => typeof v !== 'boolean')) throw new Error('no boolean masqueradeAll in it');
  const mode = field(cfg, 'mode');
  return { masqueradeAll: flags.some((v) => v === true), ...(typeof mode === 'string' && mode ? { mode } : {}) };
}

/** kube-proxy's configuration from its /configz URL; throws with the reason it cannot be read. */
export async function readKubeProxyConfig(url: string, timeoutMs = 2000): Promise<KubeProxyConfig> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new Error(`${url}: ${cause?.code ?? cause?.message ?? (e as Error).message}`);
  }
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  try {
    return parseConfigz(await res.text());
  } catch (e) {
    throw new Error(`${url}: ${(e as Error).message}`);
  }
}

/** What the agent goes by, and where it comes from (the report and `podwarp status` show both). */
export interface KubeProxyView {
  masqueradeAll: boolean;
  /** 'flag' (--masquerade-all true|false), 'configz' (read from kube-proxy), 'state' (the state file), 'unknown' (could not read it: assumed false) */
  from: 'flag' | 'configz' | 'state' | 'unknown';
  mode?: string;
  /** why /configz could not be read */
  error?: string;
}

/**
 * The agent's view of kube-proxy: the operator's setting when it is not
 * `auto`; else kube-proxy's /configz. When that cannot be read (kube-proxy
 * not running, metrics bound elsewhere), masqueradeAll is assumed off — the
 * default of kube-proxy and of every installer — and the view says so.
 */
export async function kubeProxyView(setting: MasqueradeAllSetting, url: string, timeoutMs?: number): Promise<KubeProxyView> {
  if (setting !== 'auto') return { masqueradeAll: setting, from: 'flag' };
  try {
    const c = await readKubeProxyConfig(url, timeoutMs);
    return { masqueradeAll: c.masqueradeAll, from: 'configz', ...(c.mode ? { mode: c.mode } : {}) };
  } catch (e) {
    return { masqueradeAll: false, from: 'unknown', error: (e as Error).message };
  }
}

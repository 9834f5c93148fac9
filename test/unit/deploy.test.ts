// deploy/: the manifests parse, and say what the agent needs — no more RBAC
// than get/list/watch on its five resources, the host namespaces, bpffs and
// cgroup2 mounts, probes on the port the agent listens on.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { POLICY_APIS } from '../../src/sources/kube-policies.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

// parsed manifests: checked field by field below
type Obj = Record<string, any>;

function parseAll(file: string): Obj[] {
  const docs = YAML.parseAllDocuments(fs.readFileSync(path.join(ROOT, file), 'utf8'));
  if (!Array.isArray(docs)) throw new Error(`${file}: not a YAML stream`);
  for (const d of docs) {
    const problems = [...d.errors, ...d.warnings].map((e) => e.message);
    if (problems.length) throw new Error(`${file}: ${problems.join('; ')}`);
  }
  return docs.map((d) => d.toJS() as Obj).filter((o) => o !== null);
}

/** Kubernetes memory quantity → bytes (Ki/Mi/Gi, k/M/G, plain). */
function bytes(q: string | number): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(q));
  if (!m) throw new Error(`not a memory quantity: ${q}`);
  const mult: Record<string, number> = { '': 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * mult[m[2] ?? '']!;
}

const docs = parseAll('deploy/podwarp.yaml');
const one = (kind: string): Obj => {
  const found = docs.filter((d) => d.kind === kind);
  if (found.length !== 1) throw new Error(`deploy/podwarp.yaml has ${found.length} ${kind} objects, not 1`);
  return found[0]!;
};

describe('deploy/podwarp.yaml', () => {
  it('is a stream of named objects, namespaced ones in podwarp-system', () => {
    expect(docs.map((d) => d.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'DaemonSet', 'Namespace', 'ServiceAccount']);
    for (const d of docs) {
      expect(d.apiVersion, d.kind).toBeTruthy();
      expect(d.metadata?.name, d.kind).toBeTruthy();
    }
    expect(one('Namespace').metadata.name).toBe('podwarp-system');
    for (const kind of ['ServiceAccount', 'DaemonSet']) expect(one(kind).metadata.namespace, kind).toBe('podwarp-system');
    // a privileged pod must be admitted where Pod Security is enforced
    expect(one('Namespace').metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('privileged');
  });

  it('ClusterRole: get/list/watch only, on exactly the resources the informers use (five kinds and the policy APIs), and list/watch on nodes (the zone)', () => {
    const role = one('ClusterRole');
    expect(role.apiVersion).toBe('rbac.authorization.k8s.io/v1');
    const granted = new Set<string>();
    for (const rule of role.rules as Obj[]) {
      const nodes = JSON.stringify(rule.resources) === '["nodes"]';
      // nodes: only this node, listed and watched by field selector (src/sources/kubernetes.ts); never read by name
      expect([...rule.verbs].sort(), JSON.stringify(rule)).toEqual(nodes ? ['list', 'watch'] : ['get', 'list', 'watch']);
      expect(rule.resourceNames, 'no resourceNames').toBeUndefined();
      expect(rule.nonResourceURLs, 'no nonResourceURLs').toBeUndefined();
      for (const g of rule.apiGroups as string[])
        for (const r of rule.resources as string[]) {
          expect(g).not.toBe('*');
          expect(r).not.toBe('*');
          expect(r, 'no subresources').not.toContain('/');
          granted.add(`${g}/${r}`);
        }
    }
    // the five informers' kinds, plus exactly the policy APIs the source looks for in discovery (POLICY_APIS)
    expect([...granted].sort()).toEqual(
      [
        '/namespaces',
        '/nodes',
        '/pods',
        '/services',
        'discovery.k8s.io/endpointslices',
        'networking.k8s.io/networkpolicies',
        ...POLICY_APIS.map((a) => `${a.group}/${a.plural}`),
      ].sort(),
    );
  });

  it("ClusterRoleBinding gives the ClusterRole to the DaemonSet's ServiceAccount", () => {
    const b = one('ClusterRoleBinding');
    const sa = one('ServiceAccount');
    expect(b.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: one('ClusterRole').metadata.name });
    expect(b.subjects).toEqual([{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
    expect(one('DaemonSet').spec.template.spec.serviceAccountName).toBe(sa.metadata.name);
  });

  describe('DaemonSet', () => {
    const ds = one('DaemonSet');
    const pod = ds.spec.template.spec as Obj;
    const containers = pod.containers as Obj[];
    const c = containers[0]!;
    const args = (c.args ?? []) as string[];
    const argAfter = (flag: string): string | undefined => {
      const i = args.indexOf(flag);
      if (i >= 0) return args[i + 1];
      return args.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);
    };

    it('selects its own pods', () => {
      expect(ds.apiVersion).toBe('apps/v1');
      expect(containers).toHaveLength(1);
      for (const [k, v] of Object.entries(ds.spec.selector.matchLabels as Record<string, string>))
        expect(ds.spec.template.metadata.labels[k], k).toBe(v);
    });

    it('runs podwarp:dev as the agent with the kubernetes source', () => {
      expect(c.image).toBe('podwarp:dev');
      expect(c.imagePullPolicy).toBe('IfNotPresent');
      expect(c.command, 'the image ENTRYPOINT is podwarp').toBeUndefined();
      expect(args.slice(0, 3)).toEqual(['--log-format', 'json', 'agent']);
      expect(argAfter('--source')).toBe('kubernetes');
      expect(argAfter('--state'), 'no local state file').toBeUndefined();
      const node = argAfter('--node');
      if (node !== undefined) expect(node).toBe('$(NODE_NAME)');
    });

    it('takes NODE_NAME from the downward API', () => {
      const env = (c.env as Obj[]).find((e) => e.name === 'NODE_NAME');
      expect(env?.valueFrom?.fieldRef?.fieldPath).toBe('spec.nodeName');
    });

    it('probes /healthz and /readyz on the port of --metrics-addr, which listens beyond 127.0.0.1', () => {
      const addr = argAfter('--metrics-addr');
      expect(addr).toMatch(/^0\.0\.0\.0:\d+$/);
      const port = Number(addr!.split(':')[1]);
      const named = new Map(((c.ports ?? []) as Obj[]).map((p) => [p.name, p.containerPort]));
      const probePort = (p: Obj): number => (typeof p.httpGet.port === 'number' ? p.httpGet.port : Number(named.get(p.httpGet.port)));
      expect(c.livenessProbe.httpGet.path).toBe('/healthz');
      expect(c.readinessProbe.httpGet.path).toBe('/readyz');
      expect(probePort(c.livenessProbe)).toBe(port);
      expect(probePort(c.readinessProbe)).toBe(port);
      for (const p of (c.ports ?? []) as Obj[]) expect(p.containerPort).toBe(port);
    });

    it('shares the host network and PIDs, privileged, node-critical, on control-plane nodes too', () => {
      expect(pod.hostNetwork).toBe(true);
      expect(pod.hostPID).toBe(true);
      expect(c.securityContext?.privileged).toBe(true);
      expect(pod.priorityClassName).toBe('system-node-critical');
      expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(0);
      expect(c.lifecycle?.preStop, 'stopping leaves the datapath: no preStop').toBeUndefined();
      const tolerates = (key: string) =>
        ((pod.tolerations ?? []) as Obj[]).some(
          (t) =>
            (t.key === key || (!t.key && t.operator === 'Exists')) &&
            (!t.effect || t.effect === 'NoSchedule') &&
            (t.operator === 'Exists' || (t.value ?? '') === ''),
        );
      expect(tolerates('node-role.kubernetes.io/control-plane')).toBe(true);
    });

    it("rolls without surge: a surge pod would wait, not ready, for the old pod's node lock and stall the rollout", () => {
      expect(ds.spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxSurge: 0, maxUnavailable: 1 } });
    });

    it('runs on Linux nodes only', () => {
      expect(ds.spec.template.spec.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
    });

    it('mounts the host bpffs (Bidirectional), cgroup2, /run/podwarp and /lib/modules (read-only)', () => {
      const vols = new Map((pod.volumes as Obj[]).map((v) => [v.name, v]));
      const mount = (at: string): { m: Obj; hostPath: string } => {
        const m = (c.volumeMounts as Obj[]).find((x) => x.mountPath === at);
        expect(m, `a mount at ${at}`).toBeDefined();
        const hostPath = vols.get(m!.name)?.hostPath?.path as string;
        return { m: m!, hostPath };
      };
      const bpf = mount('/sys/fs/bpf');
      expect(bpf.hostPath).toBe('/sys/fs/bpf');
      expect(bpf.m.mountPropagation).toBe('Bidirectional');
      expect(mount('/sys/fs/cgroup').hostPath).toBe('/sys/fs/cgroup');
      expect(mount('/run/podwarp').hostPath).toBe('/run/podwarp');
      const mods = mount('/lib/modules');
      expect(mods.hostPath).toBe('/lib/modules');
      expect(mods.m.readOnly).toBe(true);
    });

    it('has a memory limit of at least 200Mi, above its request', () => {
      const { requests = {}, limits = {} } = c.resources as Obj;
      expect(limits.memory).toBeDefined();
      expect(bytes(limits.memory)).toBeGreaterThanOrEqual(200 * 2 ** 20);
      expect(bytes(requests.memory)).toBeLessThanOrEqual(bytes(limits.memory));
      expect(requests.cpu).toBeDefined();
    });
  });
});

describe('deploy/kind.yaml', () => {
  const docs = parseAll('deploy/kind.yaml');
  it('is one kind Cluster with a control-plane and a worker, default CNI, IPv4', () => {
    expect(docs).toHaveLength(1);
    const k = docs[0]!;
    expect(k.kind).toBe('Cluster');
    expect(k.apiVersion).toBe('kind.x-k8s.io/v1alpha4');
    const roles = (k.nodes as Obj[]).map((n) => n.role);
    expect(roles).toContain('control-plane');
    expect(roles).toContain('worker');
    expect(k.networking?.disableDefaultCNI ?? false).toBe(false);
    expect(k.networking?.ipFamily ?? 'ipv4').toBe('ipv4');
  });
});

describe('Dockerfile', () => {
  const text = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
  it('copies what `podwarp build` and the agent read, builds, and has nsenter and flock (util-linux)', () => {
    for (const dir of ['bpf', 'abi', 'host', 'loader', 'src']) expect(text).toMatch(new RegExp(`^COPY ${dir} \\./${dir}$`, 'm'));
    expect(text).toMatch(/^COPY bin\/podwarp \.\/bin\/podwarp$/m);
    // the image is the product only: no devtools, no test tools
    expect(text).not.toMatch(/^COPY .*(devtools|test\/)/m);
    expect(text).toMatch(/^COPY package\.json package-lock\.json/m);
    expect(text).toMatch(/^RUN \.\/bin\/podwarp build/m);
    expect(text).toMatch(/\butil-linux\b/);
    expect(text).toMatch(/ln -s \/opt\/podwarp\/bin\/podwarp \/usr\/local\/bin\/podwarp/);
    const pod = one('DaemonSet').spec.template.spec.containers[0];
    expect(pod.image.split(':')[0]).toBe('podwarp');
  });
});

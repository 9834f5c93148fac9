// Strict JSON schemas for kubeconform, made offline from the Kubernetes
// OpenAPI (api/openapi-spec/swagger.json of the k8s.io/kubernetes Go module
// the e2e cluster is built from) and from CRD manifests (openAPIV3Schema).
// Strict: every object with declared properties rejects any other field, so a
// misspelled field fails validation. scripts/helm-check.sh runs it.
//
//   tsx devtools/k8s-schemas.ts --out DIR --swagger swagger.json [--crd crd.yaml …]
//
// Files: DIR/<group>/<kind>_<version>.json (kind lower-case; the core group
// under its version: DIR/v1/pod_v1.json, as kubeconform's {{.Group}} of
// apiVersion "v1" is "v1"), i.e. kubeconform's -schema-location 'DIR/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json'.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

type Schema = Record<string, unknown>;

/** The schema of one kind, written to `<group>/<kind>_<version>.json`. */
export interface KindSchema {
  group: string;
  version: string;
  kind: string;
  schema: Schema;
}

const SWAGGER_REF = '#/definitions/';

/** Copy of `s` with Kubernetes' OpenAPI extensions turned into JSON Schema, and unknown fields rejected. */
export function strictify(s: unknown): unknown {
  if (!s || typeof s !== 'object' || Array.isArray(s)) return s;
  const src = s as Schema;
  const out: Schema = {};
  const each = (m: unknown) => Object.fromEntries(Object.entries(m as Schema).map(([k, v]) => [k, strictify(v)]));
  for (const [k, v] of Object.entries(src)) {
    if (k === 'properties' || k === 'patternProperties' || k === 'definitions') out[k] = each(v);
    else if (k === 'items' || k === 'additionalProperties' || k === 'not') out[k] = strictify(v);
    else if (k === 'allOf' || k === 'anyOf' || k === 'oneOf') out[k] = (v as unknown[]).map(strictify);
    else out[k] = v;
  }
  // IntOrString (swagger format, or the CRD marker): an integer or a string
  if (src['x-kubernetes-int-or-string'] === true || src.format === 'int-or-string') {
    delete out.type;
    delete out.format;
    out.anyOf = [{ type: 'integer' }, { type: 'string' }];
  }
  if (out.properties && out.additionalProperties === undefined && src['x-kubernetes-preserve-unknown-fields'] !== true)
    out.additionalProperties = false;
  return out;
}

/** Definitions reachable from `root` through `#/definitions/…` references. */
function reachable(root: unknown, defs: Record<string, unknown>): Set<string> {
  const seen = new Set<string>();
  const visit = (x: unknown): void => {
    if (Array.isArray(x)) return x.forEach(visit);
    if (!x || typeof x !== 'object') return;
    for (const [k, v] of Object.entries(x as Schema)) {
      if (k === '$ref' && typeof v === 'string' && v.startsWith(SWAGGER_REF)) {
        const name = v.slice(SWAGGER_REF.length);
        if (!seen.has(name)) {
          if (!(name in defs)) throw new Error(`swagger: $ref to a missing definition ${name}`);
          seen.add(name);
          visit(defs[name]);
        }
      } else visit(v);
    }
  };
  visit(root);
  return seen;
}

/** Every kind of a swagger 2.0 document (x-kubernetes-group-version-kind), self-contained. */
export function fromSwagger(swagger: { definitions: Record<string, Schema> }): KindSchema[] {
  const defs = swagger.definitions;
  const out: KindSchema[] = [];
  for (const [name, def] of Object.entries(defs)) {
    const gvks = def['x-kubernetes-group-version-kind'] as { group: string; version: string; kind: string }[] | undefined;
    if (!gvks) continue;
    const used = reachable(def, defs);
    used.delete(name);
    const definitions = Object.fromEntries([...used].sort().map((n) => [n, strictify(defs[n])]));
    // Quantity is a string in the spec, a number is accepted too (`cpu: 1`)
    if (definitions['io.k8s.apimachinery.pkg.api.resource.Quantity'])
      definitions['io.k8s.apimachinery.pkg.api.resource.Quantity'] = { anyOf: [{ type: 'string' }, { type: 'number' }] };
    for (const gvk of gvks) {
      // a kind served by several group versions shares its definition; the
      // file of one names that version in apiVersion
      const schema = { ...(strictify(def) as Schema), definitions } as Schema;
      out.push({ group: gvk.group, version: gvk.version, kind: gvk.kind, schema });
    }
  }
  return out;
}

/** The served versions of one CustomResourceDefinition manifest (YAML, one or more documents). */
export function fromCrd(yamlText: string): KindSchema[] {
  const out: KindSchema[] = [];
  for (const doc of YAML.parseAllDocuments(yamlText)) {
    const crd = doc.toJS() as Schema | null;
    if (!crd || crd.kind !== 'CustomResourceDefinition') continue;
    const spec = crd.spec as {
      group: string;
      names: { kind: string };
      versions: { name: string; served: boolean; schema?: { openAPIV3Schema?: Schema } }[];
    };
    for (const v of spec.versions) {
      if (!v.served || !v.schema?.openAPIV3Schema) continue;
      out.push({ group: spec.group, version: v.name, kind: spec.names.kind, schema: strictify(v.schema.openAPIV3Schema) as Schema });
    }
  }
  return out;
}

export function writeSchemas(dir: string, kinds: KindSchema[]): number {
  for (const k of kinds) {
    const file = path.join(dir, k.group || k.version, `${k.kind.toLowerCase()}_${k.version}.json`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, JSON.stringify(k.schema));
  }
  return kinds.length;
}

function main(argv: string[]): void {
  let out = '';
  let swagger = '';
  const crds: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1] ?? '';
    if (argv[i] === '--out') out = v;
    else if (argv[i] === '--swagger') swagger = v;
    else if (argv[i] === '--crd') crds.push(v);
    else throw new Error(`k8s-schemas: unknown argument ${argv[i]}`);
    i++;
  }
  if (!out || !swagger) throw new Error('usage: k8s-schemas.ts --out DIR --swagger swagger.json [--crd crd.yaml …]');
  const kinds = [
    ...fromSwagger(JSON.parse(fs.readFileSync(swagger, 'utf8')) as { definitions: Record<string, Schema> }),
    ...crds.flatMap((f) => fromCrd(fs.readFileSync(f, 'utf8'))),
  ];
  fs.rmSync(out, { recursive: true, force: true });
  console.error(`k8s-schemas: ${writeSchemas(out, kinds)} kinds in ${out}`);
}

if (import.meta.url === `file://${process.argv[1]}`) main(process.argv.slice(2));

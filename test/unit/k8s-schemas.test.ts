// devtools/k8s-schemas.ts: the schemas kubeconform validates the chart's
// manifests with reject a misspelled field, and accept what Kubernetes does
// (int-or-string, quantities as numbers, preserve-unknown-fields).
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { fromCrd, fromSwagger } from '../../devtools/k8s-schemas.js';

const swagger = {
  definitions: {
    'io.k8s.api.apps.v1.DaemonSet': {
      'x-kubernetes-group-version-kind': [{ group: 'apps', version: 'v1', kind: 'DaemonSet' }],
      properties: {
        apiVersion: { type: 'string' },
        kind: { type: 'string' },
        spec: { $ref: '#/definitions/io.k8s.api.apps.v1.DaemonSetSpec' },
      },
    },
    'io.k8s.api.apps.v1.DaemonSetSpec': {
      required: ['selector'],
      properties: {
        selector: { type: 'object', additionalProperties: { type: 'string' } },
        maxUnavailable: { $ref: '#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString' },
        memory: { $ref: '#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity' },
        // a field named like a keyword: still a field
        properties: { type: 'string' },
      },
    },
    'io.k8s.apimachinery.pkg.util.intstr.IntOrString': { type: 'string', format: 'int-or-string' },
    'io.k8s.apimachinery.pkg.api.resource.Quantity': { type: 'string' },
    'io.k8s.api.core.v1.Unused': { properties: { a: { type: 'string' } } },
  },
};

const crd = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: { name: servicemonitors.monitoring.coreos.com }
spec:
  group: monitoring.coreos.com
  names: { kind: ServiceMonitor }
  versions:
    - name: v1
      served: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: { type: string }
                      targetPort: { x-kubernetes-int-or-string: true }
                free: { type: object, x-kubernetes-preserve-unknown-fields: true, properties: { a: { type: string } } }
`;

const validator = (schema: object) => new Ajv({ strict: false, validateFormats: false, allErrors: true }).compile(schema);

describe('k8s-schemas', () => {
  const [ds] = fromSwagger(swagger);
  it('one self-contained schema per kind, with only the definitions it references', () => {
    expect(ds).toMatchObject({ group: 'apps', version: 'v1', kind: 'DaemonSet' });
    expect(Object.keys(ds!.schema.definitions as object).sort()).toEqual([
      'io.k8s.api.apps.v1.DaemonSetSpec',
      'io.k8s.apimachinery.pkg.api.resource.Quantity',
      'io.k8s.apimachinery.pkg.util.intstr.IntOrString',
    ]);
  });

  it('accepts a valid object: int-or-string both ways, a quantity as a number, a field named "properties"', () => {
    const v = validator(ds!.schema);
    for (const spec of [
      { selector: { a: 'b' }, maxUnavailable: 1, memory: '300Mi', properties: 'x' },
      { selector: {}, maxUnavailable: '10%', memory: 1 },
    ])
      expect(v({ apiVersion: 'apps/v1', kind: 'DaemonSet', spec }), JSON.stringify(v.errors)).toBe(true);
  });

  it('rejects a misspelled field, at the top and nested, a wrong type and a missing required field', () => {
    const v = validator(ds!.schema);
    expect(v({ apiVersion: 'apps/v1', kind: 'DaemonSet', spce: {} })).toBe(false);
    expect(v.errors?.[0]).toMatchObject({ keyword: 'additionalProperties', params: { additionalProperty: 'spce' } });
    expect(v({ kind: 'DaemonSet', spec: { selector: {}, maxUnavailabel: 1 } })).toBe(false);
    expect(v.errors?.[0]?.params).toEqual({ additionalProperty: 'maxUnavailabel' });
    expect(v({ kind: 'DaemonSet', spec: { selector: {}, maxUnavailable: true } })).toBe(false);
    expect(v({ kind: 'DaemonSet', spec: {} })).toBe(false);
  });

  it('CRDs: the served versions, strict except where unknown fields are preserved', () => {
    const [sm] = fromCrd(crd);
    expect(sm).toMatchObject({ group: 'monitoring.coreos.com', version: 'v1', kind: 'ServiceMonitor' });
    const v = validator(sm!.schema);
    expect(v({ spec: { endpoints: [{ port: 'metrics', targetPort: 9464 }], free: { anything: 1 } } }), JSON.stringify(v.errors)).toBe(true);
    expect(v({ spec: { endpoints: [{ prot: 'metrics' }] } })).toBe(false);
    expect(v.errors?.[0]?.params).toEqual({ additionalProperty: 'prot' });
  });
});

// Cluster-side commands of the CLI: `podwarp enable|disable NAMESPACE` set
// or remove the podwarp.io/accelerate label with a JSON merge patch (only
// that key changes; other labels and concurrent edits are untouched).
import { CoreV1Api, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { InputError, errorMessage } from '../../host/errors.js';
import { ACCELERATE_LABEL } from '../model.js';
import { loadKubeConfig } from './kubernetes.js';

export async function setNamespaceAcceleration(ns: string, on: boolean, kubeconfig?: string): Promise<{ changed: boolean }> {
  const api = loadKubeConfig(kubeconfig).makeApiClient(CoreV1Api);
  const status = (e: unknown) => (e as { code?: number }).code;
  let before: string | undefined;
  try {
    before = (await api.readNamespace({ name: ns })).metadata?.labels?.[ACCELERATE_LABEL];
  } catch (e) {
    if (status(e) === 404) throw new InputError(`namespace "${ns}" does not exist`);
    throw new Error(`cannot read namespace ${ns}: ${errorMessage(e)}`);
  }
  const want = on ? 'true' : undefined;
  if (before === want) return { changed: false };
  try {
    await api.patchNamespace(
      { name: ns, body: { metadata: { labels: { [ACCELERATE_LABEL]: want ?? null } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  } catch (e) {
    throw new Error(`cannot label namespace ${ns}: ${errorMessage(e)}`);
  }
  return { changed: true };
}

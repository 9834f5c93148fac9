// JSON Schema checks (ajv) compiled on first use, not at import: compiling
// every schema of every module cost each CLI start about a fifth of its time
// (`podwarp --help` natively; seconds under emulation), and most commands use
// few of them.
import { Ajv, type ErrorObject, type JSONSchemaType, type Options } from 'ajv';

/** A type guard for one schema; `errors` and `text()` describe the last failed check. */
export interface SchemaCheck<T> {
  (x: unknown): x is T;
  readonly errors: ErrorObject[] | null | undefined;
  text(): string;
}

/** A factory of lazy checks sharing one ajv instance with these options (itself made on first use). */
export function checks(opts: Options): <T>(schema: object) => SchemaCheck<T> {
  let ajv: Ajv | undefined;
  const instance = (): Ajv => (ajv ??= new Ajv(opts));
  return <T>(schema: object): SchemaCheck<T> => {
    let fn: (((x: unknown) => boolean) & { errors?: ErrorObject[] | null }) | undefined;
    const check = ((x: unknown): boolean => (fn ??= instance().compile<T>(schema as JSONSchemaType<T>))(x)) as SchemaCheck<T>;
    Object.defineProperty(check, 'errors', { get: () => fn?.errors });
    check.text = () => instance().errorsText(fn?.errors);
    return check;
  };
}

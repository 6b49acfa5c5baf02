import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { configFromContext } from '../lib/config';
import { LinkFetcherStack } from '../lib/link-fetcher-stack';

/** cdk.json, so tests run with the same feature flags as `cdk synth`. */
const cdkJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8'));

/** Stand-in cargo-lambda output: a `bootstrap` file per function, no Rust build needed. */
export const FIXTURE_ASSETS = path.join(__dirname, 'fixtures', 'assets');
export const ACCOUNT = '123456789012';
export const REGION = 'us-west-2';
export const DB_SECRET_ARN = `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:hls-s2-link-fetcher-db-AbC123`;
export const EXISTING_QUEUE_ARN = `arn:aws:sqs:${REGION}:${ACCOUNT}:hls-s2-downloader-serverless-prod-to-download`;

/**
 * The events link-fetcher receives from this stack, as the Rust handler's tests
 * parse them: `pairs_request` and `fetch_item` from the state machine's daily
 * run, `backfill_pairs_request` from a backfill execution (its input is the
 * same object), `audit_request` and `send_owed_request` from the two schedules.
 */
export const STATE_MACHINE_EVENTS: {
  pairs_request: unknown;
  fetch_item: unknown;
  backfill_pairs_request: { date_platform_pairs: { days: number; end: string; platforms: string[] } };
  audit_request: unknown;
  send_owed_request: unknown;
} = JSON.parse(
  fs.readFileSync(path.join(__dirname, 'fixtures', 'state-machine-events.json'), 'utf8'),
);

/**
 * Synthesizes the stack with the given context on top of the test defaults
 * (fixture assets, a DB secret). A context value of `undefined` removes a default.
 */
export function synth(context: Record<string, unknown> = {}) {
  const merged: Record<string, unknown> = {
    ...cdkJson.context,
    assetsDir: FIXTURE_ASSETS,
    dbSecretArn: DB_SECRET_ARN,
    ...context,
  };
  for (const key of Object.keys(merged)) if (merged[key] === undefined) delete merged[key];
  const app = new App({ context: merged });
  const config = configFromContext(app.node);
  const stack = new LinkFetcherStack(app, 'LinkFetcherTest', {
    config,
    env: { account: ACCOUNT, region: REGION },
  });
  return { app, stack, config, template: Template.fromStack(stack) };
}

/** A fresh assets directory with `bootstrap` files of the given contents. */
export function makeAssetsDir(fetcherContent: string, handlerContent = 'handler'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hls-infra-assets-'));
  for (const [name, content] of [['link-fetcher', fetcherContent], ['link-subscription-handler', handlerContent]]) {
    fs.mkdirSync(path.join(dir, name));
    fs.writeFileSync(path.join(dir, name, 'bootstrap'), content, { mode: 0o755 });
  }
  return dir;
}

/** The single resource of a type (asserts there is exactly one), as [logicalId, resource]. */
export function only(template: Template, type: string): [string, any] {
  const found = Object.entries(template.findResources(type));
  expect(found).toHaveLength(1);
  return found[0];
}

/** The logical id of the function whose description starts with `prefix`. */
export function functionId(template: Template, prefix: string): string {
  const ids = Object.entries(template.findResources('AWS::Lambda::Function'))
    .filter(([, r]) => String(r.Properties.Description ?? '').startsWith(prefix))
    .map(([id]) => id);
  expect(ids).toHaveLength(1);
  return ids[0];
}

/**
 * The state machine's ASL definition as an object. Tokens inside the
 * definition string (the link-fetcher ARN) are replaced by `<ref:LogicalId>`.
 */
export function stateMachineDefinition(template: Template): any {
  const [, sm] = only(template, 'AWS::StepFunctions::StateMachine');
  const def = sm.Properties.DefinitionString;
  const parts: unknown[] = typeof def === 'string' ? [def] : def['Fn::Join'][1];
  const text = parts
    .map((p: any) => (typeof p === 'string' ? p : `<ref:${p['Fn::GetAtt']?.[0] ?? p.Ref}>`))
    .join('');
  return JSON.parse(text);
}

/** Every IAM policy statement in the template: inline role policies and AWS::IAM::Policy. */
export function policyStatements(template: Template): Array<{ owner: string; statement: any }> {
  const out: Array<{ owner: string; statement: any }> = [];
  const add = (owner: string, doc: any) => {
    for (const statement of doc?.Statement ?? []) out.push({ owner, statement });
  };
  for (const [id, r] of Object.entries(template.findResources('AWS::IAM::Policy'))) {
    add(id, r.Properties.PolicyDocument);
  }
  for (const [id, r] of Object.entries(template.findResources('AWS::IAM::ManagedPolicy'))) {
    add(id, r.Properties.PolicyDocument);
  }
  for (const [id, r] of Object.entries(template.findResources('AWS::IAM::Role'))) {
    for (const p of r.Properties.Policies ?? []) add(id, p.PolicyDocument);
  }
  return out;
}

export function asArray<T>(value: T | T[] | undefined): T[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value];
}

import * as path from 'path';
import { Node } from 'constructs';

/** Lambda CPU architecture of the cargo-lambda build. */
export type LambdaArchitecture = 'arm64' | 'x86_64';

/**
 * Everything the stack can be told, resolved from CDK context (`-c key=value`,
 * cdk.json or `new App({ context })` in tests) with defaults applied.
 *
 * Values given on the command line arrive as strings, values from cdk.json or
 * tests may already be typed, so every reader below accepts both.
 */
export interface LinkFetcherConfig {
  /** Deployment stage, e.g. `dev`, `prod`. Names the stack, the ESA secret and the SSM parameter. */
  readonly stage: string;
  /** CloudFormation stack name. */
  readonly stackName: string;
  /** Directory holding `link-fetcher/` and `link-subscription-handler/` cargo-lambda outputs. */
  readonly assetsDir: string;
  readonly architecture: LambdaArchitecture;

  /** ARN of an existing Secrets Manager secret in RDS format; undefined = CloudFormation parameter. */
  readonly dbSecretArn?: string;

  /** VPC the functions run in to reach the database; undefined = no VPC. */
  readonly vpc?: {
    readonly vpcId: string;
    readonly subnetIds: string[];
    readonly securityGroupIds: string[];
  };

  /** Existing `To Download` queue (drop-in replacement); undefined = the stack creates its own. */
  readonly existingQueue?: {
    readonly queueArn: string;
    readonly queueUrl?: string;
  };

  readonly scheduleEnabled: boolean;
  readonly scheduleExpression: string;
  readonly days: number;
  readonly platforms: string[];
  readonly mapMaxConcurrency: number;
  /** Attempts after the first for task failures of one link-fetcher invocation. */
  readonly fetchMaxRetries: number;

  /** The daily completeness audit (an EventBridge rule invoking link-fetcher; on/off with `scheduleEnabled`). */
  readonly auditScheduleExpression: string;
  /** UTC days audited, ending yesterday. */
  readonly auditDays: number;
  /** The hourly flush of owed `To Download` messages (`{"send_owed": true}`). */
  readonly sendOwedScheduleExpression: string;
  /** CloudWatch namespace of link-fetcher's Embedded Metric Format metrics (`METRICS_NAMESPACE`). */
  readonly metricsNamespace: string;

  readonly searchUrl: string;
  readonly maxAcquisitionAgeDays: number;
  readonly deadlineMarginSeconds: number;
  readonly dbPoolMaxConnections: number;
  readonly logLevel: string;
  readonly logRetentionDays: number;
  /** SNS topic the alarms notify; undefined = alarms without actions. */
  readonly alarmTopicArn?: string;
  readonly endpointUrlParameterName: string;
}

/** The repository's cargo-lambda output directory, `<repo>/target/lambda`. */
export const DEFAULT_ASSETS_DIR = path.resolve(__dirname, '..', '..', 'target', 'lambda');

export const DEFAULTS = {
  stage: 'dev',
  architecture: 'arm64' as LambdaArchitecture,
  scheduleEnabled: true,
  // Once a day at 12:00 UTC, like the Python link fetcher's daily run.
  scheduleExpression: 'cron(0 12 * * ? *)',
  // Six hours after the daily fetch, so the audit sees what that run recorded.
  auditScheduleExpression: 'cron(0 18 * * ? *)',
  auditDays: 3,
  sendOwedScheduleExpression: 'rate(1 hour)',
  days: 5,
  platforms: ['S2A', 'S2B', 'S2C'],
  mapMaxConcurrency: 3,
  fetchMaxRetries: 3,
  searchUrl: 'https://catalogue.dataspace.copernicus.eu',
  maxAcquisitionAgeDays: 30,
  deadlineMarginSeconds: 60,
  dbPoolMaxConnections: 2,
  logLevel: 'info',
  logRetentionDays: 30,
};

/** Values CloudWatch Logs accepts for a retention period, in days. */
const LOG_RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288,
  3653,
];

class ConfigError extends Error {
  constructor(key: string, message: string) {
    super(`Invalid CDK context "${key}": ${message}`);
  }
}

function raw(node: Node, key: string): unknown {
  const value = node.tryGetContext(key);
  return value === '' || value === null ? undefined : value;
}

function str(node: Node, key: string): string | undefined {
  const value = raw(node, key);
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new ConfigError(key, `expected a string, got ${JSON.stringify(value)}`);
  return value.trim() || undefined;
}

function bool(node: Node, key: string, fallback: boolean): boolean {
  const value = raw(node, key);
  if (value === undefined) return fallback;
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string' && /^(true|false)$/i.test(value.trim())) {
    return value.trim().toLowerCase() === 'true';
  }
  throw new ConfigError(key, `expected true or false, got ${JSON.stringify(value)}`);
}

function int(node: Node, key: string, fallback: number, min: number, max: number): number {
  const value = raw(node, key);
  if (value === undefined) return fallback;
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value.trim()) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(key, `expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** A list given as a JSON array (cdk.json, tests) or a comma-separated string (`-c key=a,b`). */
function list(node: Node, key: string): string[] | undefined {
  const value = raw(node, key);
  if (value === undefined) return undefined;
  const items = Array.isArray(value) ? value : typeof value === 'string' ? value.split(',') : undefined;
  if (!items || items.some((v) => typeof v !== 'string')) {
    throw new ConfigError(key, `expected a list of strings, got ${JSON.stringify(value)}`);
  }
  const cleaned = (items as string[]).map((v) => v.trim()).filter((v) => v.length > 0);
  return cleaned.length > 0 ? cleaned : undefined;
}

/** An EventBridge schedule expression. */
function schedule(node: Node, key: string, fallback: string): string {
  return matching(key, str(node, key), /^(cron|rate)\(.+\)$/, 'cron(...) or rate(...)') ?? fallback;
}

/** The default metrics namespace of a stage. */
export function defaultMetricsNamespace(stage: string): string {
  return `HLS/S2LinkFetcher/${stage}`;
}

function matching(key: string, value: string | undefined, pattern: RegExp, what: string): string | undefined {
  if (value !== undefined && !pattern.test(value)) throw new ConfigError(key, `expected ${what}, got "${value}"`);
  return value;
}

export function configFromContext(node: Node): LinkFetcherConfig {
  const stage = matching('stage', str(node, 'stage'), /^[A-Za-z0-9_-]{1,32}$/, 'letters, digits, - or _')
    ?? DEFAULTS.stage;

  const architecture = str(node, 'architecture') ?? DEFAULTS.architecture;
  if (architecture !== 'arm64' && architecture !== 'x86_64') {
    throw new ConfigError('architecture', `expected arm64 or x86_64, got "${architecture}"`);
  }

  const assetsDirRaw = str(node, 'assetsDir');
  const assetsDir = assetsDirRaw ? path.resolve(assetsDirRaw) : DEFAULT_ASSETS_DIR;

  const dbSecretArn = matching('dbSecretArn', str(node, 'dbSecretArn'),
    /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+-[A-Za-z0-9]{6}$/,
    'the complete ARN of a Secrets Manager secret (ending in the 6-character suffix)');

  const vpcId = matching('vpcId', str(node, 'vpcId'), /^vpc-([0-9a-f]{8}|[0-9a-f]{17})$/, 'a VPC id (vpc-...)');
  const subnetIds = list(node, 'subnetIds') ?? [];
  const securityGroupIds = [...(list(node, 'securityGroupIds') ?? []), ...(list(node, 'securityGroupId') ?? [])];
  subnetIds.forEach((s) => matching('subnetIds', s, /^subnet-([0-9a-f]{8}|[0-9a-f]{17})$/, 'subnet ids (subnet-...)'));
  securityGroupIds.forEach((s) => matching('securityGroupIds', s, /^sg-([0-9a-f]{8}|[0-9a-f]{17})$/, 'security group ids (sg-...)'));
  if (!vpcId && (subnetIds.length > 0 || securityGroupIds.length > 0)) {
    throw new ConfigError('vpcId', 'subnetIds/securityGroupIds were given without vpcId');
  }
  if (vpcId && (subnetIds.length === 0 || securityGroupIds.length === 0)) {
    throw new ConfigError('vpcId', 'a VPC needs subnetIds and securityGroupId(s) as well');
  }

  const queueArn = matching('toDownloadQueueArn', str(node, 'toDownloadQueueArn'),
    /^arn:aws[a-z-]*:sqs:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+(\.fifo)?$/, 'an SQS queue ARN');
  const queueUrl = matching('toDownloadQueueUrl', str(node, 'toDownloadQueueUrl'),
    /^https:\/\/\S+$/, 'an SQS queue URL');
  if (queueUrl && !queueArn) {
    throw new ConfigError('toDownloadQueueUrl', 'give toDownloadQueueArn as well (IAM grants need the ARN)');
  }

  const platforms = list(node, 'platforms') ?? DEFAULTS.platforms;
  platforms.forEach((p) => matching('platforms', p, /^S2[A-Z]$/, 'Sentinel-2 platforms like S2A'));

  const logRetentionDays = int(node, 'logRetentionDays', DEFAULTS.logRetentionDays, 1, 3653);
  if (!LOG_RETENTION_DAYS.includes(logRetentionDays)) {
    throw new ConfigError('logRetentionDays', `expected one of ${LOG_RETENTION_DAYS.join(', ')}`);
  }

  const scheduleExpression = schedule(node, 'scheduleExpression', DEFAULTS.scheduleExpression);

  // CloudWatch: up to 255 of these characters, not all spaces, and "AWS/" is reserved.
  const metricsNamespace = matching('metricsNamespace', str(node, 'metricsNamespace'),
    /^(?!AWS\/)[A-Za-z0-9._\/#:-][A-Za-z0-9._\/#: -]{0,254}$/,
    'a CloudWatch namespace (up to 255 of A-Z a-z 0-9 . _ / # : - and space, not starting with AWS/)')
    ?? defaultMetricsNamespace(stage);

  return {
    stage,
    stackName: str(node, 'stackName') ?? `hls-s2-link-fetcher-${stage}`,
    assetsDir,
    architecture,
    dbSecretArn,
    vpc: vpcId ? { vpcId, subnetIds, securityGroupIds } : undefined,
    existingQueue: queueArn ? { queueArn, queueUrl } : undefined,
    scheduleEnabled: bool(node, 'scheduleEnabled', DEFAULTS.scheduleEnabled),
    scheduleExpression,
    days: int(node, 'days', DEFAULTS.days, 1, 60),
    platforms,
    mapMaxConcurrency: int(node, 'mapMaxConcurrency', DEFAULTS.mapMaxConcurrency, 1, 40),
    fetchMaxRetries: int(node, 'fetchMaxRetries', DEFAULTS.fetchMaxRetries, 0, 10),
    auditScheduleExpression: schedule(node, 'auditScheduleExpression', DEFAULTS.auditScheduleExpression),
    // One invocation (at most 15 minutes) audits every (day, platform) of the window.
    auditDays: int(node, 'auditDays', DEFAULTS.auditDays, 1, 14),
    sendOwedScheduleExpression: schedule(node, 'sendOwedScheduleExpression', DEFAULTS.sendOwedScheduleExpression),
    metricsNamespace,
    searchUrl: matching('searchUrl', str(node, 'searchUrl'), /^https?:\/\/\S+$/, 'an http(s) URL') ?? DEFAULTS.searchUrl,
    maxAcquisitionAgeDays: int(node, 'maxAcquisitionAgeDays', DEFAULTS.maxAcquisitionAgeDays, 1, 3650),
    deadlineMarginSeconds: int(node, 'deadlineMarginSeconds', DEFAULTS.deadlineMarginSeconds, 10, 600),
    dbPoolMaxConnections: int(node, 'dbPoolMaxConnections', DEFAULTS.dbPoolMaxConnections, 1, 20),
    logLevel: str(node, 'logLevel') ?? DEFAULTS.logLevel,
    logRetentionDays,
    alarmTopicArn: matching('alarmTopicArn', str(node, 'alarmTopicArn'),
      /^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+$/, 'an SNS topic ARN'),
    endpointUrlParameterName: str(node, 'endpointUrlParameterName')
      ?? `/hls-s2-downloader-serverless/${stage}/link_subscription_endpoint_url`,
  };
}

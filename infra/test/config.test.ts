import { App } from 'aws-cdk-lib';
import { configFromContext, DEFAULT_ASSETS_DIR, DEFAULTS } from '../lib/config';

const config = (context: Record<string, unknown> = {}) => configFromContext(new App({ context }).node);

describe('context configuration', () => {
  test('defaults', () => {
    expect(config()).toEqual({
      stage: 'dev',
      stackName: 'hls-s2-link-fetcher-dev',
      assetsDir: DEFAULT_ASSETS_DIR,
      architecture: 'arm64',
      dbSecretArn: undefined,
      vpc: undefined,
      existingQueue: undefined,
      scheduleEnabled: true,
      scheduleExpression: 'cron(0 12 * * ? *)',
      days: 5,
      platforms: ['S2A', 'S2B', 'S2C'],
      mapMaxConcurrency: 3,
      fetchMaxRetries: 3,
      auditScheduleExpression: 'cron(0 18 * * ? *)',
      auditDays: 3,
      sendOwedScheduleExpression: 'rate(1 hour)',
      metricsNamespace: 'HLS/S2LinkFetcher/dev',
      searchUrl: 'https://catalogue.dataspace.copernicus.eu',
      maxAcquisitionAgeDays: 30,
      deadlineMarginSeconds: 60,
      dbPoolMaxConnections: 2,
      logLevel: 'info',
      logRetentionDays: 30,
      alarmTopicArn: undefined,
      endpointUrlParameterName: '/hls-s2-downloader-serverless/dev/link_subscription_endpoint_url',
    });
    expect(DEFAULT_ASSETS_DIR).toMatch(/target[/\\]lambda$/);
    expect(DEFAULTS.platforms).toEqual(['S2A', 'S2B', 'S2C']);
  });

  test('command-line strings and typed cdk.json values both work', () => {
    expect(config({ scheduleEnabled: 'false', days: '7', platforms: 'S2A, S2B' })).toMatchObject({
      scheduleEnabled: false, days: 7, platforms: ['S2A', 'S2B'],
    });
    expect(config({ scheduleEnabled: false, days: 7, platforms: ['S2B'] })).toMatchObject({
      scheduleEnabled: false, days: 7, platforms: ['S2B'],
    });
    expect(config({ securityGroupIds: 'sg-0abc1234,sg-0abc5678', vpcId: 'vpc-0123abcd', subnetIds: ['subnet-0a1b2c3d'] }).vpc)
      .toEqual({ vpcId: 'vpc-0123abcd', subnetIds: ['subnet-0a1b2c3d'], securityGroupIds: ['sg-0abc1234', 'sg-0abc5678'] });
  });

  test('audit, flush and metrics settings', () => {
    expect(config({ stage: 'prod' }).metricsNamespace).toBe('HLS/S2LinkFetcher/prod');
    expect(config({
      auditScheduleExpression: 'cron(0 20 * * ? *)',
      auditDays: '7',
      sendOwedScheduleExpression: 'rate(30 minutes)',
      metricsNamespace: ' HLS/Custom-1.x#2 ',
    })).toMatchObject({
      auditScheduleExpression: 'cron(0 20 * * ? *)',
      auditDays: 7,
      sendOwedScheduleExpression: 'rate(30 minutes)',
      metricsNamespace: 'HLS/Custom-1.x#2',
    });
    expect(config({ auditDays: 14 }).auditDays).toBe(14);
    expect(config({ metricsNamespace: 'N'.repeat(255) }).metricsNamespace).toHaveLength(255);
    // An empty value means the default.
    expect(config({ metricsNamespace: '', auditDays: '' })).toMatchObject({
      metricsNamespace: 'HLS/S2LinkFetcher/dev', auditDays: 3,
    });
  });

  test.each([
    [{ auditScheduleExpression: '0 18 * * *' }, /auditScheduleExpression/],
    [{ sendOwedScheduleExpression: 'every hour' }, /sendOwedScheduleExpression/],
    [{ auditDays: '0' }, /auditDays/],
    [{ auditDays: '15' }, /auditDays/],
    [{ auditDays: '2.5' }, /auditDays/],
    [{ auditDays: true }, /auditDays/],
    [{ metricsNamespace: 'AWS/Lambda' }, /metricsNamespace/],
    [{ metricsNamespace: 'HLS/S2,LinkFetcher' }, /metricsNamespace/],
    [{ metricsNamespace: 'HLS/é' }, /metricsNamespace/],
    [{ metricsNamespace: 'N'.repeat(256) }, /metricsNamespace/],
    [{ metricsNamespace: 42 }, /metricsNamespace/],
  ])('rejects %j', (context, message) => {
    expect(() => config(context)).toThrow(message);
  });

  test.each([
    [{ architecture: 'aarch64' }, /architecture/],
    [{ stage: 'has space' }, /stage/],
    [{ scheduleEnabled: 'yes' }, /scheduleEnabled/],
    [{ days: '0' }, /days/],
    [{ mapMaxConcurrency: '2.5' }, /mapMaxConcurrency/],
    [{ platforms: 'S2A,L8' }, /platforms/],
    [{ logRetentionDays: '10' }, /logRetentionDays/],
    [{ dbSecretArn: 'arn:aws:secretsmanager:us-west-2:123456789012:secret:nosuffix' }, /dbSecretArn/],
    [{ vpcId: 'vpc-0123abcd' }, /subnetIds/],
    [{ subnetIds: 'subnet-0a1b2c3d' }, /without vpcId/],
    [{ vpcId: 'vpc-0123abcd', subnetIds: 'subnet-0a1b2c3d', securityGroupId: 'sg-1' }, /securityGroupIds/],
    [{ toDownloadQueueUrl: 'https://sqs.us-west-2.amazonaws.com/123456789012/q' }, /toDownloadQueueArn/],
    [{ toDownloadQueueArn: 'arn:aws:sns:us-west-2:123456789012:q' }, /toDownloadQueueArn/],
    [{ scheduleExpression: '0 12 * * *' }, /scheduleExpression/],
  ])('rejects %j', (context, message) => {
    expect(() => config(context)).toThrow(message);
  });
});

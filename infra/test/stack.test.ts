import { Match } from 'aws-cdk-lib/assertions';
import {
  DB_SECRET_ARN,
  EXISTING_QUEUE_ARN,
  FIXTURE_ASSETS,
  functionId,
  makeAssetsDir,
  only,
  STATE_MACHINE_EVENTS,
  synth,
} from './helpers';

const { template } = synth();
const fetcherId = functionId(template, 'HLS S2 link fetcher');
const handlerId = functionId(template, 'HLS S2 link subscription handler');
const fn = (id: string) => template.findResources('AWS::Lambda::Function')[id].Properties;
const queueIds = () => Object.keys(template.findResources('AWS::SQS::Queue'));
const [toDownloadQueueId] = queueIds().filter(
  (id) => template.findResources('AWS::SQS::Queue')[id].Properties.RedrivePolicy !== undefined,
);

describe('Lambda functions', () => {
  test.each([
    ['link-fetcher', () => fetcherId],
    ['link-subscription-handler', () => handlerId],
  ])('%s runs the cargo-lambda bootstrap on provided.al2023 arm64', (_, id) => {
    expect(fn(id())).toMatchObject({
      Runtime: 'provided.al2023',
      Handler: 'bootstrap',
      Architectures: ['arm64'],
    });
  });

  test('x86_64 can be selected', () => {
    const x86 = synth({ architecture: 'x86_64' }).template;
    const ours = Object.values(x86.findResources('AWS::Lambda::Function'))
      .filter((r) => r.Properties.Runtime === 'provided.al2023');
    expect(ours).toHaveLength(2);
    for (const r of ours) expect(r.Properties.Architectures).toEqual(['x86_64']);
  });

  test('link-fetcher: 15 minute timeout and its environment', () => {
    expect(fn(fetcherId)).toMatchObject({ Timeout: 900, MemorySize: 512 });
    expect(fn(fetcherId).Environment.Variables).toEqual({
      DB_CONNECTION_SECRET_ARN: DB_SECRET_ARN,
      TO_DOWNLOAD_SQS_QUEUE_URL: { Ref: toDownloadQueueId },
      MAX_ACQUISITION_AGE_DAYS: '30',
      RUST_LOG: 'info',
      SEARCH_URL: 'https://catalogue.dataspace.copernicus.eu',
      DEADLINE_MARGIN_SECONDS: '60',
      METRICS_NAMESPACE: 'HLS/S2LinkFetcher/dev',
    });
  });

  test('link-subscription-handler: fast, small, and its environment', () => {
    expect(fn(handlerId)).toMatchObject({ Timeout: 25, MemorySize: 256 });
    expect(fn(handlerId).Timeout).toBeLessThan(30); // HTTP API integration limit
    expect(fn(handlerId).Environment.Variables).toEqual({
      DB_CONNECTION_SECRET_ARN: DB_SECRET_ARN,
      TO_DOWNLOAD_SQS_QUEUE_URL: { Ref: toDownloadQueueId },
      MAX_ACQUISITION_AGE_DAYS: '30',
      RUST_LOG: 'info',
      STAGE: 'dev',
      DB_POOL_MAX_CONNECTIONS: '2',
    });
  });

  test('environment values come from context', () => {
    const t = synth({
      stage: 'prod',
      logLevel: 'debug,sqlx=warn',
      maxAcquisitionAgeDays: '10',
      searchUrl: 'https://example.test/catalogue',
      deadlineMarginSeconds: '90',
      dbPoolMaxConnections: '3',
      metricsNamespace: 'HLS/Custom',
    }).template;
    const vars = (prefix: string) =>
      t.findResources('AWS::Lambda::Function')[functionId(t, prefix)].Properties.Environment.Variables;
    expect(vars('HLS S2 link fetcher')).toMatchObject({
      RUST_LOG: 'debug,sqlx=warn',
      MAX_ACQUISITION_AGE_DAYS: '10',
      SEARCH_URL: 'https://example.test/catalogue',
      DEADLINE_MARGIN_SECONDS: '90',
      METRICS_NAMESPACE: 'HLS/Custom',
    });
    expect(vars('HLS S2 link subscription handler')).toMatchObject({ STAGE: 'prod', DB_POOL_MAX_CONNECTIONS: '3' });
    expect(vars('HLS S2 link subscription handler').METRICS_NAMESPACE).toBeUndefined();
    const prod = synth({ stage: 'prod' }).template;
    expect(prod.findResources('AWS::Lambda::Function')[functionId(prod, 'HLS S2 link fetcher')]
      .Properties.Environment.Variables.METRICS_NAMESPACE).toBe('HLS/S2LinkFetcher/prod');
  });

  test('each function logs to its own log group with retention', () => {
    for (const id of [fetcherId, handlerId]) {
      const logGroupId = fn(id).LoggingConfig.LogGroup.Ref;
      expect(template.findResources('AWS::Logs::LogGroup')[logGroupId].Properties.RetentionInDays).toBe(30);
    }
    expect(synth({ logRetentionDays: '90' }).template.findResources('AWS::Logs::LogGroup', {
      Properties: { RetentionInDays: 90 },
    })).not.toEqual({});
  });

  test('run outside a VPC unless one is given', () => {
    expect(fn(fetcherId).VpcConfig).toBeUndefined();
    const t = synth({
      vpcId: 'vpc-0123abcd',
      subnetIds: 'subnet-0a1b2c3d,subnet-0b2c3d4e',
      securityGroupId: 'sg-0abc1234',
    }).template;
    const inVpc = Object.values(t.findResources('AWS::Lambda::Function'))
      .filter((r) => r.Properties.Runtime === 'provided.al2023');
    expect(inVpc).toHaveLength(2);
    for (const r of inVpc) {
      expect(r.Properties.VpcConfig).toEqual({
        SubnetIds: ['subnet-0a1b2c3d', 'subnet-0b2c3d4e'],
        SecurityGroupIds: ['sg-0abc1234'],
      });
    }
    // Imported, not created or modified.
    t.resourceCountIs('AWS::EC2::SecurityGroup', 0);
    t.resourceCountIs('AWS::EC2::SecurityGroupIngress', 0);
    t.resourceCountIs('AWS::EC2::SecurityGroupEgress', 0);
  });

  test('without a dbSecretArn the secret ARN is a CloudFormation parameter', () => {
    const t = synth({ dbSecretArn: undefined }).template;
    t.hasParameter('DbConnectionArn', { Type: 'String' });
    const vars = t.findResources('AWS::Lambda::Function')[functionId(t, 'HLS S2 link fetcher')]
      .Properties.Environment.Variables;
    expect(vars.DB_CONNECTION_SECRET_ARN).toEqual({ Ref: 'DbConnectionArn' });
    expect(Object.keys(template.toJSON().Parameters ?? {})).not.toContain('DbConnectionArn');
  });

  test('asset directories may hold bootstrap.zip or a bootstrap file; missing ones fail clearly', () => {
    expect(() => synth({ assetsDir: FIXTURE_ASSETS })).not.toThrow();
    expect(() => synth({ assetsDir: '/nonexistent/target/lambda' })).toThrow(/make build/);
  });
});

describe('push API', () => {
  test('HTTP API with POST /events to the handler, payload format 2.0', () => {
    template.hasResourceProperties('AWS::ApiGatewayV2::Api', { ProtocolType: 'HTTP' });
    const [, route] = only(template, 'AWS::ApiGatewayV2::Route');
    expect(route.Properties.RouteKey).toBe('POST /events');
    const [integrationId, integration] = only(template, 'AWS::ApiGatewayV2::Integration');
    expect(route.Properties.Target).toEqual({ 'Fn::Join': ['', ['integrations/', { Ref: integrationId }]] });
    expect(integration.Properties).toMatchObject({
      IntegrationType: 'AWS_PROXY',
      PayloadFormatVersion: '2.0',
      IntegrationUri: { 'Fn::GetAtt': [handlerId, 'Arn'] },
    });
  });

  test('endpoint URL is an output, and its base (the subscription manager appends "events") an SSM parameter', () => {
    const [apiId] = only(template, 'AWS::ApiGatewayV2::Api');
    const url = { 'Fn::Join': ['', [{ 'Fn::GetAtt': [apiId, 'ApiEndpoint'] }, '/events']] };
    template.hasOutput('LinkSubscriptionEndpointUrl', { Value: url });
    template.hasResourceProperties('AWS::SSM::Parameter', {
      Name: '/hls-s2-downloader-serverless/dev/link_subscription_endpoint_url',
      Type: 'String',
      Value: { 'Fn::Join': ['', [{ 'Fn::GetAtt': [apiId, 'ApiEndpoint'] }, '/']] },
    });
    synth({ stage: 'prod' }).template.hasResourceProperties('AWS::SSM::Parameter', {
      Name: '/hls-s2-downloader-serverless/prod/link_subscription_endpoint_url',
    });
  });
});

describe('To Download queue', () => {
  test('a fresh stage creates the queue with a dead-letter queue and 14-day retention', () => {
    expect(queueIds()).toHaveLength(2);
    const queues = template.findResources('AWS::SQS::Queue');
    const dlqId = queueIds().find((id) => id !== toDownloadQueueId)!;
    expect(queues[toDownloadQueueId].Properties).toMatchObject({
      MessageRetentionPeriod: 14 * 24 * 3600,
      RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [dlqId, 'Arn'] }, maxReceiveCount: 3 },
    });
    expect(queues[dlqId].Properties.MessageRetentionPeriod).toBe(14 * 24 * 3600);
    template.hasOutput('ToDownloadQueueUrl', { Value: { Ref: toDownloadQueueId } });
  });

  test('an existing queue given by ARN is used and no queue is created', () => {
    const t = synth({ toDownloadQueueArn: EXISTING_QUEUE_ARN }).template;
    t.resourceCountIs('AWS::SQS::Queue', 0);
    t.resourceCountIs('AWS::SQS::QueuePolicy', 0);
    const vars = t.findResources('AWS::Lambda::Function')[functionId(t, 'HLS S2 link fetcher')]
      .Properties.Environment.Variables;
    expect(JSON.stringify(vars.TO_DOWNLOAD_SQS_QUEUE_URL)).toContain(
      '/123456789012/hls-s2-downloader-serverless-prod-to-download',
    );

    const url = 'https://sqs.us-west-2.amazonaws.com/123456789012/hls-s2-downloader-serverless-prod-to-download';
    const withUrl = synth({ toDownloadQueueArn: EXISTING_QUEUE_ARN, toDownloadQueueUrl: url }).template;
    expect(withUrl.findResources('AWS::Lambda::Function')[functionId(withUrl, 'HLS S2 link subscription handler')]
      .Properties.Environment.Variables.TO_DOWNLOAD_SQS_QUEUE_URL).toBe(url);
  });
});

describe('alarms', () => {
  test('an error alarm for each function', () => {
    for (const id of [fetcherId, handlerId]) {
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: 'AWS/Lambda',
        MetricName: 'Errors',
        Dimensions: [{ Name: 'FunctionName', Value: { Ref: id } }],
        Statistic: 'Sum',
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        TreatMissingData: 'notBreaching',
      });
    }
  });

  test('alarms for the API 5xx and failed state machine executions', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', { Namespace: 'AWS/ApiGateway', MetricName: '5xx' });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Metrics: Match.arrayWith([Match.objectLike({ Expression: 'failed + timedOut' })]),
    });
    template.resourceCountIs('AWS::CloudWatch::Alarm', 7);
  });

  test('alarms notify an SNS topic when one is given', () => {
    const topic = 'arn:aws:sns:us-west-2:123456789012:hls-alerts';
    const t = synth({ alarmTopicArn: topic }).template;
    const alarms = Object.values(t.findResources('AWS::CloudWatch::Alarm'));
    expect(alarms).toHaveLength(7);
    for (const a of alarms) expect(a.Properties.AlarmActions).toEqual([topic]);
  });
});

describe('link-fetcher metric alarms', () => {
  const alarm = (prefix: string, t = template) => {
    const found = Object.entries(t.findResources('AWS::CloudWatch::Alarm')).filter(([id]) => id.startsWith(prefix));
    expect(found).toHaveLength(1);
    return found[0][1].Properties;
  };
  const common = {
    Namespace: 'HLS/S2LinkFetcher/dev',
    Dimensions: [{ Name: 'service', Value: 'link-fetcher' }],
    Statistic: 'Maximum',
    EvaluationPeriods: 1,
    TreatMissingData: 'notBreaching',
  };

  test.each([
    ['LinkFetcherMissingAfterRequeueAlarm', 'StillMissing'],
    ['LinkFetcherAuditIncompleteAlarm', 'AuditIncomplete'],
  ])('%s: %s above 0 on any day', (id, metric) => {
    expect(alarm(id)).toMatchObject({
      ...common,
      MetricName: metric,
      Period: 86400,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
  });

  test('LinkFetcherUnsentOverAnHourAlarm: a message owed for more than an hour', () => {
    expect(alarm('LinkFetcherUnsentOverAnHourAlarm')).toMatchObject({
      ...common,
      MetricName: 'OldestUnsentAge',
      Period: 3600,
      Threshold: 3600,
      ComparisonOperator: 'GreaterThanThreshold',
    });
  });

  test('exactly one dimension (service), the one every metric is also published under', () => {
    for (const id of ['LinkFetcherMissingAfterRequeueAlarm', 'LinkFetcherAuditIncompleteAlarm',
      'LinkFetcherUnsentOverAnHourAlarm']) {
      expect(alarm(id).Dimensions).toEqual([{ Name: 'service', Value: 'link-fetcher' }]);
      expect(alarm(id).Metrics).toBeUndefined();
    }
  });

  test('the namespace follows the stage, or metricsNamespace', () => {
    const prod = synth({ stage: 'prod' }).template;
    expect(alarm('LinkFetcherUnsentOverAnHourAlarm', prod).Namespace).toBe('HLS/S2LinkFetcher/prod');
    const custom = synth({ metricsNamespace: 'HLS/Other' }).template;
    for (const id of ['LinkFetcherMissingAfterRequeueAlarm', 'LinkFetcherAuditIncompleteAlarm',
      'LinkFetcherUnsentOverAnHourAlarm']) {
      expect(alarm(id, custom).Namespace).toBe('HLS/Other');
    }
  });
});

describe('audit and owed-message schedules', () => {
  const rules = (t = template) => Object.entries(t.findResources('AWS::Events::Rule'))
    .filter(([, r]) => r.Properties.Targets.some((x: any) => x.Arn?.['Fn::GetAtt']?.[0] === functionId(t, 'HLS S2 link fetcher')));
  const rule = (prefix: string, t = template) => {
    const found = rules(t).filter(([id]) => id.startsWith(prefix));
    expect(found).toHaveLength(1);
    return found[0];
  };

  test('exactly two rules invoke link-fetcher directly, each with one target and no role', () => {
    expect(rules().map(([id]) => id.replace(/[0-9A-F]{8}$/, '')).sort()).toEqual(['DailyLinkFetcherAudit', 'HourlySendOwed']);
    for (const [, r] of rules()) {
      expect(r.Properties.Targets).toHaveLength(1);
      expect(r.Properties.Targets[0].Arn).toEqual({ 'Fn::GetAtt': [fetcherId, 'Arn'] });
      // Lambda targets are allowed by a resource policy on the function, not a role.
      expect(r.Properties.Targets[0].RoleArn).toBeUndefined();
    }
  });

  test('the daily audit runs 6 hours after the fetch, with the audit event', () => {
    const [, r] = rule('DailyLinkFetcherAudit');
    expect(r.Properties.ScheduleExpression).toBe('cron(0 18 * * ? *)');
    expect(r.Properties.State).toBe('ENABLED');
    expect(JSON.parse(r.Properties.Targets[0].Input)).toEqual(STATE_MACHINE_EVENTS.audit_request);
    expect(JSON.parse(r.Properties.Targets[0].Input)).toEqual({
      audit: { days: 3, platforms: ['S2A', 'S2B', 'S2C'], requeue: true },
    });
  });

  test('the hourly flush sends {"send_owed": true}', () => {
    const [, r] = rule('HourlySendOwed');
    expect(r.Properties.ScheduleExpression).toBe('rate(1 hour)');
    expect(r.Properties.State).toBe('ENABLED');
    expect(r.Properties.Targets[0].Input).toBe('{"send_owed":true}');
    expect(JSON.parse(r.Properties.Targets[0].Input)).toEqual(STATE_MACHINE_EVENTS.send_owed_request);
  });

  test('each rule may invoke link-fetcher, and nothing else is allowed to', () => {
    const permissions = Object.values(template.findResources('AWS::Lambda::Permission'))
      .filter((p) => p.Properties.Principal === 'events.amazonaws.com');
    expect(permissions).toHaveLength(2);
    const ruleArns = rules().map(([id]) => ({ 'Fn::GetAtt': [id, 'Arn'] }));
    for (const p of permissions) {
      expect(p.Properties).toMatchObject({
        Action: 'lambda:InvokeFunction',
        FunctionName: { 'Fn::GetAtt': [fetcherId, 'Arn'] },
      });
      expect(ruleArns).toContainEqual(p.Properties.SourceArn);
    }
  });

  test('schedules, days and platforms come from context; scheduleEnabled switches them off', () => {
    const t = synth({
      auditScheduleExpression: 'cron(30 20 * * ? *)',
      sendOwedScheduleExpression: 'rate(15 minutes)',
      auditDays: '5',
      platforms: 'S2B,S2C',
      scheduleEnabled: 'false',
    }).template;
    const [, audit] = rule('DailyLinkFetcherAudit', t);
    expect(audit.Properties).toMatchObject({ ScheduleExpression: 'cron(30 20 * * ? *)', State: 'DISABLED' });
    expect(JSON.parse(audit.Properties.Targets[0].Input)).toEqual({
      audit: { days: 5, platforms: ['S2B', 'S2C'], requeue: true },
    });
    const [, flush] = rule('HourlySendOwed', t);
    expect(flush.Properties).toMatchObject({ ScheduleExpression: 'rate(15 minutes)', State: 'DISABLED' });
  });
});

describe('stack outputs (read by scripts/backfill.sh)', () => {
  test('the state machine ARN and the link-fetcher function name', () => {
    const [smId] = only(template, 'AWS::StepFunctions::StateMachine');
    template.hasOutput('LinkFetchingStateMachineArn', { Value: { Ref: smId } });
    template.hasOutput('LinkFetcherFunctionName', { Value: { Ref: fetcherId } });
  });
});

describe('schema migrations on deploy', () => {
  const [crId, customResource] = only(template, 'Custom::HlsLinkFetcherSchemaMigrations');

  test('a custom resource whose provider invokes link-fetcher', () => {
    const serviceToken = customResource.Properties.ServiceToken['Fn::GetAtt'];
    expect(serviceToken[1]).toBe('Arn');
    const framework = template.findResources('AWS::Lambda::Function')[serviceToken[0]];
    expect(framework.Properties.Environment.Variables.USER_ON_EVENT_FUNCTION_ARN).toEqual({
      'Fn::GetAtt': [fetcherId, 'Arn'],
    });
  });

  test('re-runs when the link-fetcher code changes, not otherwise', () => {
    const hash = (fetcher: string, handler = 'h') =>
      only(synth({ assetsDir: makeAssetsDir(fetcher, handler) }).template,
        'Custom::HlsLinkFetcherSchemaMigrations')[1].Properties.LinkFetcherCodeHash;
    expect(hash('v1')).toMatch(/^[0-9a-f]{64}$/);
    expect(hash('v1')).toBe(hash('v1', 'other handler'));
    expect(hash('v1')).not.toBe(hash('v2'));
  });

  test('re-runs against a different database', () => {
    expect(customResource.Properties.DbConnectionSecretArn).toBe(DB_SECRET_ARN);
    const other = 'arn:aws:secretsmanager:us-west-2:123456789012:secret:other-db-XyZ789';
    expect(only(synth({ dbSecretArn: other }).template, 'Custom::HlsLinkFetcherSchemaMigrations')[1]
      .Properties.DbConnectionSecretArn).toBe(other);
  });

  test('the API, the handler, the state machine and the schedule wait for it', () => {
    const dependsOn = (type: string) => Object.values(template.findResources(type))
      .map((r) => r.DependsOn ?? []);
    for (const type of [
      'AWS::ApiGatewayV2::Route',
      'AWS::ApiGatewayV2::Integration',
      'AWS::ApiGatewayV2::Stage',
      'AWS::StepFunctions::StateMachine',
      'AWS::Events::Rule',
    ]) {
      const deps = dependsOn(type);
      expect(deps.length).toBeGreaterThan(0);
      for (const d of deps) expect(d).toContain(crId);
    }
    expect(template.findResources('AWS::Lambda::Function')[handlerId].DependsOn).toContain(crId);
    // The custom resource itself must not wait for what waits for it.
    expect(customResource.DependsOn ?? []).toEqual([]);
  });
});

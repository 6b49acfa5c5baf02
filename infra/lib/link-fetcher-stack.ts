import * as fs from 'fs';
import * as path from 'path';
import { Construct } from 'constructs';
import {
  Annotations,
  CfnOutput,
  CfnParameter,
  CustomResource,
  Duration,
  FileSystem,
  Stack,
  StackProps,
  Tags,
} from 'aws-cdk-lib';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventsTargets from 'aws-cdk-lib/aws-events-targets';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import * as cr from 'aws-cdk-lib/custom-resources';
import { LinkFetcherConfig } from './config';

export interface LinkFetcherStackProps extends StackProps {
  readonly config: LinkFetcherConfig;
}

/** Binary (cargo package) names; also the sub-directories of the cargo-lambda output. */
export const LINK_FETCHER = 'link-fetcher';
export const LINK_SUBSCRIPTION_HANDLER = 'link-subscription-handler';

/** The Secrets Manager secret the subscription handler reads the ESA push credentials from. */
export function esaSecretName(stage: string): string {
  return `hls-s2-downloader-serverless/${stage}/esa-subscription-credentials`;
}

/**
 * The event the state machine's first state sends to link-fetcher: "give me the
 * (day, platform) pairs of the last `days` days".
 */
export function datePlatformPairsRequest(days: number, platforms: string[]) {
  return { date_platform_pairs: { days, platforms } };
}

/**
 * The event of the daily completeness audit: the `days` UTC days before today,
 * each platform, re-queueing what the catalogue has and we did not record and queue.
 */
export function auditRequest(days: number, platforms: string[]) {
  return { audit: { days, platforms, requeue: true } };
}

/** The event of the hourly flush: send the `To Download` messages still owed. */
export const SEND_OWED_REQUEST = { send_owed: true } as const;

/** The `service` dimension link-fetcher publishes every metric under (besides platform and path). */
export const METRICS_SERVICE = LINK_FETCHER;

/** Errors of the Lambda service itself (not of our code): always worth retrying. */
const LAMBDA_SERVICE_ERRORS = [
  'Lambda.ServiceException',
  'Lambda.AWSLambdaException',
  'Lambda.SdkClientException',
  'Lambda.TooManyRequestsException',
  'Lambda.ClientExecutionTimeoutException',
];

/**
 * The cargo-lambda build output of one binary: `<assetsDir>/<name>/bootstrap.zip`
 * as built by `cargo lambda build --output-format zip`, or a directory holding a
 * `bootstrap` executable (the default cargo-lambda output, and what tests use).
 */
function lambdaAsset(assetsDir: string, name: string): string {
  const dir = path.join(assetsDir, name);
  const zip = path.join(dir, 'bootstrap.zip');
  if (fs.existsSync(zip)) return zip;
  if (fs.existsSync(path.join(dir, 'bootstrap'))) return dir;
  throw new Error(
    `No cargo-lambda build output for ${name}: expected ${zip} (or ${dir}/bootstrap). ` +
      'Run "make build" first, or synthesize against another directory: -c assetsDir=<dir> ' +
      '(make: LAMBDA_ASSETS_DIR=<dir>).',
  );
}

export class LinkFetcherStack extends Stack {
  public readonly linkFetcher: lambda.Function;
  public readonly linkSubscriptionHandler: lambda.Function;
  public readonly stateMachine: sfn.StateMachine;
  public readonly toDownloadQueue: sqs.IQueue;
  public readonly httpApi: apigwv2.HttpApi;
  public readonly schemaMigrations: CustomResource;

  constructor(scope: Construct, id: string, props: LinkFetcherStackProps) {
    super(scope, id, props);
    const cfg = props.config;

    Tags.of(this).add('Project', 'hls-s2-link-fetcher');
    Tags.of(this).add('Stage', cfg.stage);

    const architecture = cfg.architecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64;
    const logRetention = cfg.logRetentionDays as logs.RetentionDays;
    const alarmTopic = cfg.alarmTopicArn ? sns.Topic.fromTopicArn(this, 'AlarmTopic', cfg.alarmTopicArn) : undefined;

    // ---------------------------------------------------------------- database
    // The secret (RDS format: username, password, host, dbname, port) belongs to the
    // database's owner, not to this stack. Given by context, or else asked for at
    // deploy time as a CloudFormation parameter so the template stays deployable.
    const dbSecretArn = cfg.dbSecretArn ?? new CfnParameter(this, 'DbConnectionArn', {
      type: 'String',
      // (Not "...SecretArn": linters take such names for passwords and want NoEcho.)
      description: 'Complete ARN of the Secrets Manager secret (RDS format) for the HLS link fetcher database',
      allowedPattern: '^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+-[A-Za-z0-9]{6}$',
    }).valueAsString;
    const dbSecret = secretsmanager.Secret.fromSecretCompleteArn(this, 'DbConnectionSecret', dbSecretArn);

    // Network: run in the database's VPC when one is given. The VPC is imported from
    // attributes rather than looked up so that synth never needs AWS credentials.
    let network: Pick<lambda.FunctionProps, 'vpc' | 'vpcSubnets' | 'securityGroups'> = {};
    if (cfg.vpc) {
      const subnets = cfg.vpc.subnetIds.map((id, i) => {
        const subnet = ec2.Subnet.fromSubnetId(this, `Subnet${i}`, id);
        Annotations.of(subnet).acknowledgeWarning('@aws-cdk/aws-ec2:noSubnetRouteTableId',
          'Lambda only needs the subnet id; nothing here reads its route table');
        return subnet;
      });
      network = {
        vpc: ec2.Vpc.fromVpcAttributes(this, 'Vpc', {
          vpcId: cfg.vpc.vpcId,
          // Only used when subnets are selected by type; ours are given explicitly.
          availabilityZones: cfg.vpc.subnetIds.map((_, i) => `${this.region}-subnet${i}`),
        }),
        vpcSubnets: { subnets },
        securityGroups: cfg.vpc.securityGroupIds.map((id, i) =>
          // Not mutable: this stack must not add rules to a group it does not own.
          ec2.SecurityGroup.fromSecurityGroupId(this, `SecurityGroup${i}`, id, { mutable: false })),
      };
    }

    // ------------------------------------------------------- To Download queue
    if (cfg.existingQueue) {
      // Drop-in replacement: send to the old system's queue, which its downloader consumes.
      this.toDownloadQueue = sqs.Queue.fromQueueAttributes(this, 'ToDownloadQueue', {
        queueArn: cfg.existingQueue.queueArn,
        queueUrl: cfg.existingQueue.queueUrl,
      });
    } else {
      const deadLetterQueue = new sqs.Queue(this, 'ToDownloadDeadLetterQueue', {
        retentionPeriod: Duration.days(14),
        enforceSSL: true,
      });
      this.toDownloadQueue = new sqs.Queue(this, 'ToDownloadQueue', {
        retentionPeriod: Duration.days(14),
        // The downloader consuming this queue fetches a whole granule per message
        // (up to a 15 minute Lambda), so a message stays invisible that long.
        visibilityTimeout: Duration.minutes(15),
        deadLetterQueue: { queue: deadLetterQueue, maxReceiveCount: 3 },
        enforceSSL: true,
      });
    }

    const commonEnvironment = {
      DB_CONNECTION_SECRET_ARN: dbSecret.secretArn,
      TO_DOWNLOAD_SQS_QUEUE_URL: this.toDownloadQueue.queueUrl,
      MAX_ACQUISITION_AGE_DAYS: String(cfg.maxAcquisitionAgeDays),
      RUST_LOG: cfg.logLevel,
    };

    // ------------------------------------------------------------ link-fetcher
    const linkFetcherAsset = lambdaAsset(cfg.assetsDir, LINK_FETCHER);
    this.linkFetcher = new lambda.Function(this, 'LinkFetcher', {
      description: `HLS S2 link fetcher (${cfg.stage}): polls the CDSE search API for one day and platform`,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      handler: 'bootstrap',
      architecture,
      code: lambda.Code.fromAsset(linkFetcherAsset),
      // Mostly waiting on the CDSE catalogue and Postgres; memory is for parsing
      // 100-result pages and the CPU share that comes with it. 512 MB is several
      // times the working set of the Rust binary and keeps JSON parsing quick.
      memorySize: 512,
      // A day with many granules takes many pages; the function stops itself
      // DEADLINE_MARGIN_SECONDS before this and returns completed=false, and the
      // state machine invokes it again. 900 s is the Lambda maximum.
      timeout: Duration.seconds(900),
      environment: {
        ...commonEnvironment,
        SEARCH_URL: cfg.searchUrl,
        DEADLINE_MARGIN_SECONDS: String(cfg.deadlineMarginSeconds),
        // Embedded Metric Format lines in its log: no API call, no extra permission.
        METRICS_NAMESPACE: cfg.metricsNamespace,
      },
      logGroup: new logs.LogGroup(this, 'LinkFetcherLogs', { retention: logRetention }),
      ...network,
    });

    // ------------------------------------------------ link-subscription-handler
    this.linkSubscriptionHandler = new lambda.Function(this, 'LinkSubscriptionHandler', {
      description: `HLS S2 link subscription handler (${cfg.stage}): receives CDSE push events`,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      handler: 'bootstrap',
      architecture,
      code: lambda.Code.fromAsset(lambdaAsset(cfg.assetsDir, LINK_SUBSCRIPTION_HANDLER)),
      // One small JSON event per request, one insert and one SQS message:
      // 256 MB is ample for the Rust binary and gives a fast cold start.
      memorySize: 256,
      // Answers in well under a second once warm; 25 s leaves room for a cold start
      // plus a slow database connection, and stays below the HTTP API's 30 s
      // integration limit so a timeout is logged by Lambda, not hidden behind a 503.
      timeout: Duration.seconds(25),
      environment: {
        ...commonEnvironment,
        STAGE: cfg.stage,
        // Each concurrent instance holds this many Postgres connections: keep it small.
        DB_POOL_MAX_CONNECTIONS: String(cfg.dbPoolMaxConnections),
      },
      logGroup: new logs.LogGroup(this, 'LinkSubscriptionHandlerLogs', { retention: logRetention }),
      ...network,
    });

    // ---------------------------------------------------- least-privilege IAM
    // Each function reads only its own secrets and sends only to its queue.
    dbSecret.grantRead(this.linkFetcher);
    dbSecret.grantRead(this.linkSubscriptionHandler);
    secretsmanager.Secret.fromSecretNameV2(this, 'EsaSubscriptionCredentials', esaSecretName(cfg.stage))
      .grantRead(this.linkSubscriptionHandler);
    this.toDownloadQueue.grantSendMessages(this.linkFetcher);
    this.toDownloadQueue.grantSendMessages(this.linkSubscriptionHandler);

    // ------------------------------------------------- schema migrations on deploy
    // link-fetcher answers CloudFormation custom-resource events by running its
    // embedded (idempotent) sqlx migrations. The properties below change whenever
    // the link-fetcher code or the database does, so every such deploy re-runs
    // them, and everything that makes the functions take traffic waits for it.
    const migrationsProvider = new cr.Provider(this, 'SchemaMigrationsProvider', {
      onEventHandler: this.linkFetcher,
      logGroup: new logs.LogGroup(this, 'SchemaMigrationsProviderLogs', { retention: logRetention }),
    });
    this.schemaMigrations = new CustomResource(this, 'SchemaMigrations', {
      serviceToken: migrationsProvider.serviceToken,
      resourceType: 'Custom::HlsLinkFetcherSchemaMigrations',
      properties: {
        LinkFetcherCodeHash: FileSystem.fingerprint(linkFetcherAsset),
        DbConnectionSecretArn: dbSecret.secretArn,
      },
    });
    // New handler code must not serve requests before its schema exists.
    this.linkSubscriptionHandler.node.addDependency(this.schemaMigrations);

    // ------------------------------------------------------------- push API
    this.httpApi = new apigwv2.HttpApi(this, 'LinkSubscriptionApi', {
      description: `HLS S2 link subscription endpoint (${cfg.stage}) for CDSE push subscriptions`,
    });
    this.httpApi.addRoutes({
      path: '/events',
      methods: [apigwv2.HttpMethod.POST],
      integration: new HttpLambdaIntegration('LinkSubscriptionIntegration', this.linkSubscriptionHandler, {
        payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
      }),
    });
    // API, stage, route, integration and invoke permission all wait for the migrations.
    this.httpApi.node.addDependency(this.schemaMigrations);
    const endpointUrl = `${this.httpApi.apiEndpoint}/events`;

    // The Python subscription manager reads this parameter and appends `events`
    // itself, so it holds the API's base URL with its trailing slash.
    new ssm.StringParameter(this, 'LinkSubscriptionEndpointUrlParameter', {
      parameterName: cfg.endpointUrlParameterName,
      description: `Base URL of the CDSE push endpoint; append "events" (${cfg.stage})`,
      stringValue: `${this.httpApi.apiEndpoint}/`,
    });

    // ------------------------------------------------ Link Fetching state machine
    const retryLinkFetcher = (task: tasks.LambdaInvoke) => {
      task.addRetry({
        errors: LAMBDA_SERVICE_ERRORS,
        interval: Duration.seconds(2),
        backoffRate: 2,
        maxAttempts: 6,
        jitterStrategy: sfn.JitterType.FULL,
      });
      if (cfg.fetchMaxRetries > 0) {
        // Our own failures (CDSE or database errors, timeouts): back off longer.
        task.addRetry({
          errors: [sfn.Errors.TASKS_FAILED],
          interval: Duration.seconds(30),
          backoffRate: 2,
          maxAttempts: cfg.fetchMaxRetries,
          jitterStrategy: sfn.JitterType.FULL,
        });
      }
      return task;
    };

    // Plain Lambda invocations whose state input/output is exactly the function's
    // payload and result (payloadResponseOnly), so the events link-fetcher receives
    // are exactly the ones in test/fixtures/state-machine-events.json.
    const getDatePlatformPairs = retryLinkFetcher(new tasks.LambdaInvoke(this, 'GetDatePlatformPairs', {
      lambdaFunction: this.linkFetcher,
      payload: sfn.TaskInput.fromObject(datePlatformPairsRequest(cfg.days, cfg.platforms)),
      payloadResponseOnly: true,
      retryOnServiceExceptions: false,
    }));
    // Backfills (scripts/backfill.sh): an execution started with
    // {"date_platform_pairs": {"days": N, "end": "YYYY-MM-DD", "platforms": [...]}}
    // asks link-fetcher for exactly those pairs instead of the configured window.
    const getBackfillDatePlatformPairs = retryLinkFetcher(new tasks.LambdaInvoke(this, 'GetBackfillDatePlatformPairs', {
      lambdaFunction: this.linkFetcher,
      payload: sfn.TaskInput.fromObject({ date_platform_pairs: sfn.JsonPath.objectAt('$.date_platform_pairs') }),
      payloadResponseOnly: true,
      retryOnServiceExceptions: false,
    }));
    const backfill = new sfn.Choice(this, 'Backfill?')
      .when(sfn.Condition.isPresent('$.date_platform_pairs'), getBackfillDatePlatformPairs)
      .otherwise(getDatePlatformPairs);
    const fetchLinks = retryLinkFetcher(new tasks.LambdaInvoke(this, 'FetchLinks', {
      lambdaFunction: this.linkFetcher,
      // Rebuilt from the item on every round, so the loop sends the same event
      // again (without the previous result's "completed").
      payload: sfn.TaskInput.fromObject({ query_date_platform: sfn.JsonPath.listAt('$.query_date_platform') }),
      payloadResponseOnly: true,
      retryOnServiceExceptions: false,
    }));
    const completed = new sfn.Choice(this, 'Completed?')
      .when(sfn.Condition.booleanEquals('$.completed', false), fetchLinks)
      .when(sfn.Condition.booleanEquals('$.completed', true), new sfn.Succeed(this, 'DatePlatformFetched'))
      .otherwise(new sfn.Fail(this, 'UnexpectedLinkFetcherResult', {
        error: 'UnexpectedLinkFetcherResult',
        cause: 'link-fetcher returned no boolean "completed"',
      }));

    // A failed (day, platform) fails the execution (and its alarm); the next
    // daily run queries the same overlapping window of days again.
    const fetchEach = new sfn.Map(this, 'FetchEachDatePlatform', {
      itemsPath: '$.query_date_platforms',
      maxConcurrency: cfg.mapMaxConcurrency,
      resultPath: sfn.JsonPath.DISCARD,
    });
    fetchEach.itemProcessor(fetchLinks.next(completed));

    getDatePlatformPairs.next(fetchEach);
    getBackfillDatePlatformPairs.next(fetchEach);

    this.stateMachine = new sfn.StateMachine(this, 'LinkFetching', {
      comment: `HLS S2 Link Fetching (${cfg.stage}): fetch links for the last ${cfg.days} days, ` +
        'or for the input\'s date_platform_pairs (backfill)',
      definitionBody: sfn.DefinitionBody.fromChainable(backfill),
      // Below the daily schedule period so scheduled runs never pile up.
      timeout: Duration.hours(23),
    });
    this.stateMachine.node.addDependency(this.schemaMigrations);

    const schedule = new events.Rule(this, 'DailyLinkFetching', {
      description: `Starts the HLS S2 Link Fetching state machine (${cfg.stage})`,
      schedule: events.Schedule.expression(cfg.scheduleExpression),
      enabled: cfg.scheduleEnabled,
      targets: [new eventsTargets.SfnStateMachine(this.stateMachine, {
        input: events.RuleTargetInput.fromObject({}),
      })],
    });
    schedule.node.addDependency(this.schemaMigrations);

    // ------------------------------------------------- audit and owed messages
    // Both invoke link-fetcher asynchronously (Lambda retries a failed invocation
    // twice; a failure that remains shows in LinkFetcherErrorsAlarm). Each fits one
    // invocation: the audit and the flush stop themselves before the 900 s timeout
    // (DEADLINE_MARGIN_SECONDS) and report what they could not finish
    // (AuditIncomplete, OldestUnsentAge); the next run picks it up.
    const linkFetcherRule = (id: string, description: string, expression: string, event: object) => {
      const rule = new events.Rule(this, id, {
        description: `${description} (${cfg.stage})`,
        schedule: events.Schedule.expression(expression),
        enabled: cfg.scheduleEnabled,
        targets: [new eventsTargets.LambdaFunction(this.linkFetcher, {
          event: events.RuleTargetInput.fromObject(event),
        })],
      });
      // Not before the schema the function needs exists.
      rule.node.addDependency(this.schemaMigrations);
      return rule;
    };
    linkFetcherRule('DailyLinkFetcherAudit',
      `Audits the last ${cfg.auditDays} days against the CDSE catalogue and re-queues what is missing`,
      cfg.auditScheduleExpression, auditRequest(cfg.auditDays, cfg.platforms));
    linkFetcherRule('HourlySendOwed', 'Sends the To Download messages link-fetcher still owes',
      cfg.sendOwedScheduleExpression, SEND_OWED_REQUEST);

    // ---------------------------------------------------------------- alarms
    // By default: alarm when the metric reaches 1 (e.g. any error in the period).
    const alarm = (id: string, description: string, metric: cloudwatch.IMetric, threshold: {
      threshold: number;
      comparisonOperator: cloudwatch.ComparisonOperator;
    } = { threshold: 1, comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD }) => {
      const a = new cloudwatch.Alarm(this, id, {
        alarmDescription: `${description} (${cfg.stage})`,
        metric,
        ...threshold,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      if (alarmTopic) a.addAlarmAction(new cwActions.SnsAction(alarmTopic));
      return a;
    };
    const fiveMinutes = { period: Duration.minutes(5), statistic: cloudwatch.Stats.SUM };
    alarm('LinkFetcherErrorsAlarm', 'link-fetcher invocations failed',
      this.linkFetcher.metricErrors(fiveMinutes));
    alarm('LinkSubscriptionHandlerErrorsAlarm', 'link-subscription-handler invocations failed',
      this.linkSubscriptionHandler.metricErrors(fiveMinutes));
    alarm('LinkSubscriptionApiServerErrorsAlarm', 'link subscription endpoint answered 5xx',
      this.httpApi.metricServerError(fiveMinutes));
    alarm('LinkFetchingFailedAlarm', 'Link Fetching state machine executions failed or timed out',
      new cloudwatch.MathExpression({
        expression: 'failed + timedOut',
        usingMetrics: {
          failed: this.stateMachine.metricFailed(fiveMinutes),
          timedOut: this.stateMachine.metricTimedOut(fiveMinutes),
        },
        period: Duration.minutes(5),
      }));

    // link-fetcher's own metrics (Embedded Metric Format), across platforms and paths.
    const linkFetcherMetric = (metricName: string, period: Duration) => new cloudwatch.Metric({
      namespace: cfg.metricsNamespace,
      metricName,
      dimensionsMap: { service: METRICS_SERVICE },
      statistic: cloudwatch.Stats.MAXIMUM,
      period,
    });
    alarm('LinkFetcherMissingAfterRequeueAlarm',
      'the daily audit found catalogue products still not recorded and queued after re-queueing (StillMissing)',
      linkFetcherMetric('StillMissing', Duration.days(1)));
    alarm('LinkFetcherAuditIncompleteAlarm',
      'the daily audit could not read a day and platform completely (AuditIncomplete)',
      linkFetcherMetric('AuditIncomplete', Duration.days(1)));
    alarm('LinkFetcherUnsentOverAnHourAlarm',
      'a To Download message has been owed (recorded, not sent) for more than an hour (OldestUnsentAge)',
      linkFetcherMetric('OldestUnsentAge', Duration.hours(1)),
      { threshold: 3600, comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD });

    // ---------------------------------------------------------------- outputs
    new CfnOutput(this, 'LinkSubscriptionEndpointUrl', {
      description: 'Endpoint for the CDSE push subscription (POST)',
      value: endpointUrl,
    });
    new CfnOutput(this, 'LinkFetchingStateMachineArn', { value: this.stateMachine.stateMachineArn });
    new CfnOutput(this, 'ToDownloadQueueUrl', { value: this.toDownloadQueue.queueUrl });
    new CfnOutput(this, 'LinkFetcherFunctionName', { value: this.linkFetcher.functionName });
    new CfnOutput(this, 'LinkSubscriptionHandlerFunctionName', {
      value: this.linkSubscriptionHandler.functionName,
    });
  }
}

import { Template } from 'aws-cdk-lib/assertions';
import { asArray, DB_SECRET_ARN, EXISTING_QUEUE_ARN, functionId, policyStatements, synth } from './helpers';

const variants: Array<[string, Record<string, unknown>]> = [
  ['fresh stage (own queue, no VPC)', {}],
  ['drop-in (existing queue, VPC, no schedule)', {
    stage: 'prod',
    toDownloadQueueArn: EXISTING_QUEUE_ARN,
    vpcId: 'vpc-0123abcd',
    subnetIds: 'subnet-0a1b2c3d,subnet-0b2c3d4e',
    securityGroupId: 'sg-0abc1234',
    scheduleEnabled: 'false',
  }],
  ['secret ARN as a CloudFormation parameter', { dbSecretArn: undefined }],
];

/** Statements of the policies attached to a function's role. */
function functionStatements(template: Template, functionLogicalId: string): any[] {
  const role = template.findResources('AWS::Lambda::Function')[functionLogicalId].Properties.Role['Fn::GetAtt'][0];
  return Object.values(template.findResources('AWS::IAM::Policy'))
    .filter((p) => p.Properties.Roles.some((r: any) => r.Ref === role))
    .flatMap((p) => p.Properties.PolicyDocument.Statement);
}

const secretResources = (statements: any[]) => statements
  .filter((s) => asArray(s.Action).some((a: string) => a.startsWith('secretsmanager:')))
  .flatMap((s) => asArray(s.Resource));

describe.each(variants)('IAM least privilege: %s', (_, context) => {
  const { template } = synth(context);

  test('no statement allows a wildcard action', () => {
    const statements = policyStatements(template);
    expect(statements.length).toBeGreaterThan(0);
    for (const { owner, statement } of statements) {
      for (const action of [...asArray(statement.Action), ...asArray(statement.NotAction)]) {
        expect({ owner, action }).toEqual({ owner, action: expect.not.stringMatching(/(^\*$)|(:\*$)/) });
      }
      expect(statement.NotAction).toBeUndefined();
      expect(statement.Effect).toBe('Allow');
    }
  });

  test('link-fetcher reads only the database secret and sends only to its queue', () => {
    const statements = functionStatements(template, functionId(template, 'HLS S2 link fetcher'));
    expect(secretResources(statements)).toHaveLength(1);
    expectOnlyQueueAndSecretActions(statements);
  });

  test('link-subscription-handler reads only the database secret and its own ESA secret', () => {
    const statements = functionStatements(template, functionId(template, 'HLS S2 link subscription handler'));
    const resources = secretResources(statements).map((r) => JSON.stringify(r));
    expect(resources).toHaveLength(2);
    const stage = (context.stage as string | undefined) ?? 'dev';
    const esa = resources.filter((r) => r.includes(':secret:hls-s2-downloader-serverless/'));
    expect(esa).toHaveLength(1);
    // fromSecretNameV2 matches the random 6-character suffix Secrets Manager appends.
    expect(esa[0]).toContain(`:secret:hls-s2-downloader-serverless/${stage}/esa-subscription-credentials-??????"`);
    expectOnlyQueueAndSecretActions(statements);
  });
});

function expectOnlyQueueAndSecretActions(statements: any[]) {
  for (const s of statements) {
    const actions = asArray(s.Action).sort();
    if (actions.some((a: string) => a.startsWith('sqs:'))) {
      expect(actions).toEqual(['sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:SendMessage']);
      expect(asArray(s.Resource)).toHaveLength(1);
    } else {
      expect(actions).toEqual(['secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue']);
    }
  }
}

test('the database secret grant is the exact ARN given', () => {
  const { template } = synth();
  const statements = functionStatements(template, functionId(template, 'HLS S2 link fetcher'));
  expect(secretResources(statements)).toEqual([DB_SECRET_ARN]);
});

test('the existing queue grant is the exact ARN given', () => {
  const { template } = synth({ toDownloadQueueArn: EXISTING_QUEUE_ARN });
  for (const prefix of ['HLS S2 link fetcher', 'HLS S2 link subscription handler']) {
    const sqs = functionStatements(template, functionId(template, prefix))
      .filter((s) => asArray(s.Action).some((a: string) => a.startsWith('sqs:')));
    expect(sqs.flatMap((s) => asArray(s.Resource))).toEqual([EXISTING_QUEUE_ARN]);
  }
});

test('the state machine and the schedule may only invoke/start what they need', () => {
  const { template } = synth();
  const actions = policyStatements(template)
    .map(({ statement }) => asArray(statement.Action))
    .flat()
    .filter((a: string) => !a.startsWith('secretsmanager:') && !a.startsWith('sqs:'));
  expect([...new Set(actions)].sort()).toEqual(['lambda:GetFunction', 'lambda:InvokeFunction', 'states:StartExecution']);
});

import { isPresent, run, StatesFail } from './asl';
import { functionId, only, STATE_MACHINE_EVENTS, stateMachineDefinition, synth } from './helpers';

const { template } = synth();
const definition = stateMachineDefinition(template);
const fetcherRef = `<ref:${functionId(template, 'HLS S2 link fetcher')}>`;

/** All Task states, however deeply nested in Map item processors. */
function tasks(machine: any): Record<string, any> {
  const out: Record<string, any> = {};
  for (const [name, state] of Object.entries<any>(machine.States)) {
    if (state.Type === 'Task') out[name] = state;
    if (state.ItemProcessor) Object.assign(out, tasks(state.ItemProcessor));
  }
  return out;
}

const mapState = () => Object.values<any>(definition.States).find((s) => s.Type === 'Map');

/** A fake link-fetcher: answers the pairs request, then `rounds` incomplete results per item. */
function fakeLinkFetcher(pairs: unknown[], rounds: number) {
  const calls: unknown[] = [];
  const seen = new Map<string, number>();
  const invoke = (resource: string, payload: any) => {
    expect(resource).toBe(fetcherRef);
    calls.push(payload);
    if ('date_platform_pairs' in payload) return { query_date_platforms: pairs };
    const key = JSON.stringify(payload);
    const n = (seen.get(key) ?? 0) + 1;
    seen.set(key, n);
    return { ...payload, completed: n > rounds };
  };
  return { invoke, calls };
}

describe('Link Fetching state machine', () => {
  test('every task is a plain invocation of link-fetcher (payload in, result out)', () => {
    const all = tasks(definition);
    expect(Object.keys(all).sort()).toEqual(['FetchLinks', 'GetBackfillDatePlatformPairs', 'GetDatePlatformPairs']);
    for (const task of Object.values(all)) {
      // The function ARN itself as resource = the "payloadResponseOnly" integration:
      // the state's Parameters are the event, the function's result is the output.
      expect(task.Resource).toBe(fetcherRef);
      expect(task.ResultSelector).toBeUndefined();
      expect(task.InputPath).toBeUndefined();
    }
  });

  test('sends exactly the events in test/fixtures/state-machine-events.json', () => {
    // The daily run's pairs request is the configured one, verbatim.
    expect(definition.States.GetDatePlatformPairs.Parameters).toEqual(STATE_MACHINE_EVENTS.pairs_request);

    // Running the definition with the schedule's input ({}): the pairs response's
    // items reach link-fetcher unchanged.
    const item = STATE_MACHINE_EVENTS.fetch_item;
    const { invoke, calls } = fakeLinkFetcher([item], 0);
    run(definition, {}, invoke);
    expect(calls).toEqual([STATE_MACHINE_EVENTS.pairs_request, item]);
  });

  describe('backfill: an execution input with date_platform_pairs', () => {
    const backfill = STATE_MACHINE_EVENTS.backfill_pairs_request;

    test('starts with a choice on whether $.date_platform_pairs is present', () => {
      const start = definition.States[definition.StartAt];
      expect(start.Type).toBe('Choice');
      expect(start.Choices).toEqual([
        { Variable: '$.date_platform_pairs', IsPresent: true, Next: 'GetBackfillDatePlatformPairs' },
      ]);
      expect(start.Default).toBe('GetDatePlatformPairs');
      // Both pair requests go on to the same Map.
      const mapName = Object.keys(definition.States).find((n) => definition.States[n].Type === 'Map');
      expect(definition.States.GetDatePlatformPairs.Next).toBe(mapName);
      expect(definition.States.GetBackfillDatePlatformPairs.Next).toBe(mapName);
    });

    test('sends exactly {"date_platform_pairs": <the input\'s object>}, then fetches each pair it gets', () => {
      expect(definition.States.GetBackfillDatePlatformPairs.Parameters).toEqual({
        'date_platform_pairs.$': '$.date_platform_pairs',
      });
      const items = [
        { query_date_platform: ['2025-01-21', 'S2A'] },
        { query_date_platform: ['2025-01-21', 'S2B'] },
      ];
      const { invoke, calls } = fakeLinkFetcher(items, 1);
      // Other keys of the execution input do not reach link-fetcher.
      run(definition, { ...backfill, note: 'operator backfill' }, invoke);
      expect(calls).toEqual([backfill, ...items.flatMap((i) => [i, i])]);
    });

    test('the default window is sent when the input has no date_platform_pairs', () => {
      for (const input of [{}, { date_platform_pair: backfill.date_platform_pairs }]) {
        const { invoke, calls } = fakeLinkFetcher([], 0);
        run(definition, input, invoke);
        expect(calls).toEqual([STATE_MACHINE_EVENTS.pairs_request]);
      }
    });

    test('the backfill request does not depend on the configured window', () => {
      const custom = stateMachineDefinition(synth({ days: '10', platforms: 'S2A' }).template);
      const { invoke, calls } = fakeLinkFetcher([], 0);
      run(custom, backfill, invoke);
      expect(calls).toEqual([backfill]);
    });

    test('the interpreter\'s IsPresent', () => {
      expect(isPresent({ a: { b: null } }, '$.a.b')).toBe(true);
      expect(isPresent({ a: {} }, '$.a.b')).toBe(false);
      expect(isPresent({}, '$.a')).toBe(false);
    });
  });

  test('loops on "completed": false, re-sending the same event until true', () => {
    const items = [
      { query_date_platform: ['2024-04-01', 'S2A'] },
      { query_date_platform: ['2024-04-01', 'S2B'] },
      { query_date_platform: ['2024-04-02', 'S2A'] },
    ];
    const { invoke, calls } = fakeLinkFetcher(items, 2);
    run(definition, {}, invoke);
    // pairs request, then three rounds per item, each with exactly the item as event.
    expect(calls).toEqual([STATE_MACHINE_EVENTS.pairs_request, ...items.flatMap((i) => [i, i, i])]);

    const choice = Object.values<any>(mapState().ItemProcessor.States).find((s) => s.Type === 'Choice');
    expect(choice.Choices).toEqual(expect.arrayContaining([
      { Variable: '$.completed', BooleanEquals: false, Next: 'FetchLinks' },
    ]));
  });

  test('fails instead of looping when link-fetcher returns no boolean "completed"', () => {
    const invoke = (_: string, payload: any) =>
      'date_platform_pairs' in payload ? { query_date_platforms: [STATE_MACHINE_EVENTS.fetch_item] } : { completed: 'yes' };
    expect(() => run(definition, {}, invoke)).toThrow(StatesFail);
  });

  test('Map iterates over query_date_platforms with bounded concurrency', () => {
    expect(mapState().ItemsPath).toBe('$.query_date_platforms');
    expect(mapState().MaxConcurrency).toBe(3);
    const custom = stateMachineDefinition(synth({ mapMaxConcurrency: '7' }).template);
    expect(Object.values<any>(custom.States).find((s) => s.Type === 'Map').MaxConcurrency).toBe(7);
  });

  test('days and platforms come from context', () => {
    const custom = stateMachineDefinition(synth({ days: '10', platforms: 'S2A,S2C' }).template);
    expect(custom.States.GetDatePlatformPairs.Parameters).toEqual({
      date_platform_pairs: { days: 10, platforms: ['S2A', 'S2C'] },
    });
  });

  test('retries Lambda service errors and task failures with bounded exponential backoff', () => {
    for (const task of Object.values(tasks(definition))) {
      expect(task.Retry).toEqual([
        expect.objectContaining({
          ErrorEquals: [
            'Lambda.ServiceException',
            'Lambda.AWSLambdaException',
            'Lambda.SdkClientException',
            'Lambda.TooManyRequestsException',
            'Lambda.ClientExecutionTimeoutException',
          ],
          BackoffRate: 2,
          MaxAttempts: 6,
        }),
        expect.objectContaining({ ErrorEquals: ['States.TaskFailed'], BackoffRate: 2, MaxAttempts: 3 }),
      ]);
    }
  });

  test('has an overall timeout below the daily schedule period', () => {
    expect(definition.TimeoutSeconds).toBeLessThan(24 * 3600);
  });

  test('is started by a daily schedule that can be switched off', () => {
    const [smId] = only(template, 'AWS::StepFunctions::StateMachine');
    const rules = Object.values(template.findResources('AWS::Events::Rule'))
      .filter((r) => r.Properties.Targets.some((t: any) => t.Arn?.Ref === smId));
    expect(rules).toHaveLength(1);
    const [rule] = rules;
    expect(rule.Properties.ScheduleExpression).toBe('cron(0 12 * * ? *)');
    expect(rule.Properties.State).toBe('ENABLED');
    expect(rule.Properties.Targets).toHaveLength(1);
    expect(rule.Properties.Targets[0]).toMatchObject({ Arn: { Ref: smId }, Input: '{}' });

    const disabled = synth({ scheduleEnabled: 'false', scheduleExpression: 'rate(6 hours)' }).template;
    disabled.hasResourceProperties('AWS::Events::Rule', { State: 'DISABLED', ScheduleExpression: 'rate(6 hours)' });
    // The backfill path is for executions started by hand, not by the schedule.
    expect(isPresent(JSON.parse(rule.Properties.Targets[0].Input), '$.date_platform_pairs')).toBe(false);
  });
});

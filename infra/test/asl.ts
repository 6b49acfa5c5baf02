/**
 * A very small Amazon States Language interpreter: exactly the subset the Link
 * Fetching state machine uses (JSONPath Task/Choice/Map/Succeed/Fail with
 * Parameters and ResultPath; Choice rules BooleanEquals and IsPresent), so tests can run the synthesized definition and
 * record the events link-fetcher would receive. Anything outside the subset
 * throws, so the definition cannot quietly grow features these tests ignore.
 */

export type Invoke = (resource: string, payload: unknown) => unknown;

export class StatesFail extends Error {
  constructor(public readonly error: string, public readonly cause?: string) {
    super(`${error}: ${cause ?? ''}`);
  }
}

const SUPPORTED: Record<string, string[]> = {
  Task: ['Type', 'Resource', 'Parameters', 'ResultPath', 'Retry', 'Next', 'End', 'Comment'],
  Choice: ['Type', 'Choices', 'Default', 'Comment'],
  Map: ['Type', 'ItemsPath', 'ItemProcessor', 'MaxConcurrency', 'ResultPath', 'Next', 'End', 'Comment'],
  Succeed: ['Type', 'Comment'],
  Fail: ['Type', 'Error', 'Cause', 'Comment'],
};

/** `$`, `$.a`, `$.a.b` */
export function readPath(data: unknown, jsonPath: string): unknown {
  if (jsonPath === '$') return data;
  if (!/^\$(\.[A-Za-z_][A-Za-z0-9_]*)+$/.test(jsonPath)) throw new Error(`unsupported path ${jsonPath}`);
  let value: any = data;
  for (const key of jsonPath.slice(2).split('.')) {
    if (value === null || typeof value !== 'object' || !(key in value)) {
      throw new StatesFail('States.Runtime', `path ${jsonPath} not found`);
    }
    value = value[key];
  }
  return value;
}

/** Whether `jsonPath` (`$.a`, `$.a.b`) names a field of `data` (ASL `IsPresent`). */
export function isPresent(data: unknown, jsonPath: string): boolean {
  try {
    readPath(data, jsonPath);
    return true;
  } catch (e) {
    if (e instanceof StatesFail) return false;
    throw e;
  }
}

/** Renders a Parameters template against the state input. */
export function renderParameters(template: unknown, input: unknown): unknown {
  if (Array.isArray(template)) return template.map((t) => renderParameters(t, input));
  if (template === null || typeof template !== 'object') return template;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(template)) {
    if (key.endsWith('.$')) {
      if (typeof value !== 'string' || value.startsWith('$$') || !value.startsWith('$')) {
        throw new Error(`unsupported dynamic parameter ${key}: ${JSON.stringify(value)}`);
      }
      out[key.slice(0, -2)] = readPath(input, value);
    } else {
      out[key] = renderParameters(value, input);
    }
  }
  return out;
}

function applyResultPath(state: any, input: unknown, result: unknown): unknown {
  if (!('ResultPath' in state) || state.ResultPath === '$') return result;
  if (state.ResultPath === null) return input;
  throw new Error(`unsupported ResultPath ${state.ResultPath}`);
}

/** Runs a state machine (or an ItemProcessor) to completion and returns its output. */
export function run(machine: any, input: unknown, invoke: Invoke, maxSteps = 1000): unknown {
  let name: string = machine.StartAt;
  let data = input;
  for (let step = 0; step < maxSteps; step++) {
    const state = machine.States[name];
    if (!state) throw new Error(`no state ${name}`);
    const allowed = SUPPORTED[state.Type];
    if (!allowed) throw new Error(`unsupported state type ${state.Type}`);
    const extra = Object.keys(state).filter((k) => !allowed.includes(k));
    if (extra.length > 0) throw new Error(`state ${name}: unsupported fields ${extra.join(', ')}`);

    switch (state.Type) {
      case 'Task': {
        const payload = 'Parameters' in state ? renderParameters(state.Parameters, data) : data;
        data = applyResultPath(state, data, invoke(state.Resource, payload));
        break;
      }
      case 'Map': {
        const items = readPath(data, state.ItemsPath ?? '$');
        if (!Array.isArray(items)) throw new StatesFail('States.Runtime', `${state.ItemsPath} is not an array`);
        const results = items.map((item) => run(state.ItemProcessor, item, invoke, maxSteps));
        data = applyResultPath(state, data, results);
        break;
      }
      case 'Choice': {
        const match = state.Choices.find((c: any) => {
          const keys = Object.keys(c).filter((k) => k !== 'Next').sort().join();
          if (keys === 'BooleanEquals,Variable' && typeof c.BooleanEquals === 'boolean') {
            return readPath(data, c.Variable) === c.BooleanEquals;
          }
          if (keys === 'IsPresent,Variable' && typeof c.IsPresent === 'boolean') {
            return isPresent(data, c.Variable) === c.IsPresent;
          }
          throw new Error(`unsupported choice rule ${JSON.stringify(c)}`);
        });
        if (match) {
          name = match.Next;
          continue;
        }
        if (!state.Default) throw new StatesFail('States.NoChoiceMatched');
        name = state.Default;
        continue;
      }
      case 'Succeed':
        return data;
      case 'Fail':
        throw new StatesFail(state.Error, state.Cause);
    }
    if (state.End) return data;
    name = state.Next;
  }
  throw new Error(`state machine did not finish within ${maxSteps} steps`);
}

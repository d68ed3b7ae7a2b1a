/**
 * The batch script template. `{{name}}` inserts a value shell-quoted; `{{!name}}` inserts it
 * verbatim and is reserved for text the bridge itself builds (the #SBATCH block, the agent
 * command) or that has a fixed alphabet (the pickup token). A site overrides the whole template
 * with its own file; unknown or missing names fail when the template is loaded, not at spawn time.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TemplateError } from './errors.js';

export const TEMPLATE_VARIABLES = [
  'directives',
  'session_id',
  'user',
  'project',
  'bridge_url',
  'agent_command',
  'pickup_token',
  'job_name',
] as const;
export type TemplateVariable = (typeof TEMPLATE_VARIABLES)[number];
export type TemplateValues = Record<TemplateVariable, string>;

export const DEFAULT_TEMPLATE_PATH = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  'templates',
  'batch.sh',
);

const PLACEHOLDER = /\{\{(!?)([a-z_]+)\}\}/g;

/** POSIX shell single quoting. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

export class BatchTemplate {
  private constructor(
    readonly text: string,
    readonly source: string,
  ) {}

  static fromText(text: string, source = '<inline>'): BatchTemplate {
    if (!text.startsWith('#!')) {
      throw new TemplateError(`${source}: a batch script must start with #!`);
    }
    for (const m of text.matchAll(PLACEHOLDER)) {
      if (!(TEMPLATE_VARIABLES as readonly string[]).includes(m[2] as string)) {
        throw new TemplateError(`${source}: unknown placeholder {{${m[1]}${m[2]}}}`);
      }
    }
    if (!/\{\{!pickup_token\}\}/.test(text)) {
      throw new TemplateError(`${source}: the template must pass {{!pickup_token}} to the agent`);
    }
    return new BatchTemplate(text, source);
  }

  static load(path = DEFAULT_TEMPLATE_PATH): BatchTemplate {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new TemplateError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code}`);
    }
    return BatchTemplate.fromText(text, path);
  }

  render(values: TemplateValues): string {
    return this.text.replace(PLACEHOLDER, (_all, raw: string, name: string) => {
      const value = values[name as TemplateVariable];
      return raw === '!' ? value : shellQuote(value);
    });
  }
}

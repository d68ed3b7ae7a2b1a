import { expect, test } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeDataset } from '../src/dataset.js';

test('the synthetic dataset is reproducible, linked by pseudonym, and has no direct identifiers', () => {
  const a = mkdtempSync(join(tmpdir(), 'tre-ds-'));
  const b = mkdtempSync(join(tmpdir(), 'tre-ds-'));
  try {
    const da = writeDataset(a, { patients: 50, seed: 7 });
    writeDataset(b, { patients: 50, seed: 7 });
    for (const f of da.files) expect(readFileSync(join(a, f))).toEqual(readFileSync(join(b, f)));
    const patients = readFileSync(join(a, 'patients.csv'), 'utf8').trim().split('\n');
    expect(patients[0]).toBe('pseudonym,birth_year,sex,region,diagnosis');
    expect(patients).toHaveLength(51);
    const ids = new Set(patients.slice(1).map((l) => l.split(',')[0]));
    expect(ids.size).toBe(50);
    const labs = readFileSync(join(a, 'lab_values.csv'), 'utf8').trim().split('\n').slice(1);
    for (const l of labs) expect(ids.has(l.split(',')[0])).toBe(true);
    for (const l of patients.slice(1)) {
      const [id, year, sex, region] = l.split(',');
      expect(id).toMatch(/^PSN-[0-9a-f]{6}[0-9a-z]{3}$/);
      expect(Number(year)).toBeGreaterThanOrEqual(1930);
      expect(['F', 'M']).toContain(sex);
      expect(region).toMatch(/^\d{2}$/);
    }
    writeDataset(b, { patients: 50, seed: 8 });
    expect(readFileSync(join(b, 'patients.csv'))).not.toEqual(
      readFileSync(join(a, 'patients.csv')),
    );
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { EXIT } from '../../cli/io.ts';
import { main } from '../../cli/main.ts';
import { buildChain, softAk } from '../lib/shard/fixtures.ts';

function sink() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) }, out, err };
}

describe('imastream verify-shard', () => {
  it('exits 0 for a good chain, 1 naming the failed shard, 2 for unusable input', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'verify-shard-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const chain = buildChain({ records: 9, cut: 3 });
    const paths = await Promise.all(
      chain.files.map(async (f, i) => {
        const p = join(dir, `shard-${i}.imsshard`);
        await writeFile(p, f);
        return p;
      }),
    );
    const ak = join(dir, 'ak.pub');
    await writeFile(ak, chain.ak.akPublic);

    let s = sink();
    assert.equal(await main(['verify-shard', ...paths, '--ak', ak], s.io), EXIT.ok);
    assert.match(s.out.at(-1)!, /^OK: 3\/3 shards verified/);

    // Given in any order (a glob sorts 10-20 before 3-6), the chain is verified in seq order.
    s = sink();
    assert.equal(await main(['verify-shard', paths[2]!, paths[0]!, paths[1]!, '--ak', ak], s.io), EXIT.ok);
    assert.deepEqual(
      s.out.filter((l) => l.startsWith('ok')).map((l) => l.split(' ').find((w) => w.endsWith('.imsshard'))),
      paths,
    );

    s = sink();
    assert.equal(await main(['verify-shard', ...paths, '--json'], s.io), EXIT.ok);
    const json = JSON.parse(s.out.join('\n'));
    assert.equal(json.ok, true);
    assert.equal(json.akTrusted, false);

    const corrupt = chain.files[1]!.slice();
    corrupt[100] = (corrupt[100] as number) ^ 1;
    await writeFile(paths[1]!, corrupt);
    s = sink();
    assert.equal(await main(['verify-shard', ...paths], s.io), EXIT.failed);
    assert.ok(s.out.some((l) => l.startsWith('FAIL') && l.includes('shard-1')));
    assert.ok(s.out.some((l) => l.includes('SHARD_INTEGRITY')));

    const otherAk = join(dir, 'other.pub');
    await writeFile(otherAk, softAk().akPublic);
    s = sink();
    assert.equal(await main(['verify-shard', paths[0]!, '--ak', otherAk], s.io), EXIT.failed);
    assert.ok(s.out.some((l) => l.includes('SHARD_UNTRUSTED_AK')));

    const notShard = join(dir, 'not-a-shard');
    await writeFile(notShard, 'hello');
    for (const argv of [[notShard], [join(dir, 'missing')], [], [paths[0]!, '--ak', notShard], ['--bogus']]) {
      s = sink();
      assert.equal(await main(['verify-shard', ...argv], s.io), EXIT.unusable, argv.join(' '));
    }
  });

  it('prints ids from the file escaped: a crafted boot id sends no escape sequence to the terminal', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'verify-shard-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const chain = buildChain({ records: 4, cut: 4, bootId: 'boot\u001b]0;owned\u0007:1' });
    const path = join(dir, 'crafted.imsshard');
    await writeFile(path, chain.files[0]!);
    const s = sink();
    await main(['verify-shard', path], s.io);
    assert.ok(
      s.out.every((l) => !/[\u0000-\u001f\u007f]/.test(l)),
      s.out.join('\n'),
    );
    assert.ok(
      s.out.some((l) => l.includes('boot\\u{1b}]0;owned\\u{7}:1')),
      s.out.join('\n'),
    );
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { main } from '../../../cli/main.ts';

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, sink: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) } };
}

describe('pipeline commands', () => {
  for (const command of ['replayer', 'quote-checker', 'nonces', 'alerts']) {
    it(`${command} lists its options with --help`, async () => {
      const { out, sink } = io();

      assert.equal(await main([command, '--help'], sink), 0);
      assert.match(out.join('\n'), /--kafka-brokers/);
    });

    it(`${command} refuses bad settings with one IMS_CONFIG_INVALID line, before connecting`, async () => {
      const { err, sink } = io();
      const code = await main([command, '--kafka-brokers', 'not a broker', '--log-level', 'loud'], sink);

      assert.equal(code, 2);
      assert.equal(err.length, 1);
      assert.match(err[0]!, /IMS_CONFIG_INVALID: .*--kafka-brokers.*--log-level/);
    });
  }

  it('replayer refuses an unknown bank', async () => {
    const { err, sink } = io();

    assert.equal(await main(['replayer', '--banks', 'sha1,md5'], sink), 2);
    assert.match(err[0]!, /--banks.*"md5" is not a bank/);
  });

  it('nonces refuses an interval it cannot read', async () => {
    const { err, sink } = io();

    assert.equal(await main(['nonces', '--interval', 'soon'], sink), 2);
    assert.match(err[0]!, /--interval.*not a duration/);
  });
});

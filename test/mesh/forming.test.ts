// The first view's rank assignment: remembered ranks first, then PeerId order, extras left out.
import { describe, expect, test } from 'bun:test';
import { formationProposal } from '../../mesh/forming.ts';

const c = (peerId: string, rememberedRank = -1) => ({ peerId, bootId: 'b', rememberedRank });

describe('formationProposal', () => {
  test('waits until worldSize candidates are present', () => {
    expect(formationProposal([c('a'), c('b')], 3)).toBeNull();
  });

  test('assigns ranks in PeerId order and leaves extras out', () => {
    const ranks = formationProposal([c('d'), c('b'), c('a'), c('c')], 3);
    expect(ranks?.map((r) => r.peerId)).toEqual(['a', 'b', 'c']);
  });

  test('a remembered rank wins over PeerId order, and its holder is chosen before newcomers', () => {
    const ranks = formationProposal([c('a'), c('b'), c('z', 0), c('y', 2)], 3);
    expect(ranks?.map((r) => r.peerId)).toEqual(['z', 'a', 'y']);
  });

  test('two peers remembering the same rank: PeerId order breaks the tie, the other fills a free rank', () => {
    const ranks = formationProposal([c('q', 1), c('p', 1), c('r')], 3);
    expect(ranks?.map((r) => r.peerId)).toEqual(['q', 'p', 'r']);
  });

  test('a remembered rank beyond worldSize counts as none', () => {
    const ranks = formationProposal([c('a', 7), c('b')], 2);
    expect(ranks?.map((r) => r.peerId)).toEqual(['a', 'b']);
  });
});

// The partition hook: a set of blocked peers that the connection gater refuses in both
// directions. Blocking also hangs up existing connections, because the gater alone only
// judges new ones.
import type { ConnectionGater, PeerId } from '@libp2p/interface';

export class PeerGate {
  private readonly blockedIds = new Set<string>();

  readonly gater: ConnectionGater = {
    denyDialPeer: (peer: PeerId) => this.isBlocked(peer.toString()),
    denyInboundEncryptedConnection: (peer: PeerId) => this.isBlocked(peer.toString()),
    denyOutboundEncryptedConnection: (peer: PeerId) => this.isBlocked(peer.toString()),
    denyInboundUpgradedConnection: (peer: PeerId) => this.isBlocked(peer.toString()),
    denyOutboundUpgradedConnection: (peer: PeerId) => this.isBlocked(peer.toString()),
  };

  isBlocked(peerId: string): boolean {
    return this.blockedIds.has(peerId);
  }

  /** Adds peers to the blocked set; returns those that were not blocked before. */
  block(peerIds: Iterable<string>): string[] {
    const added: string[] = [];
    for (const id of peerIds) {
      if (!this.blockedIds.has(id)) added.push(id);
      this.blockedIds.add(id);
    }
    return added;
  }

  /** Removes peers from the blocked set; returns those that were blocked. */
  unblock(peerIds: Iterable<string>): string[] {
    const removed: string[] = [];
    for (const id of peerIds) if (this.blockedIds.delete(id)) removed.push(id);
    return removed;
  }

  blocked(): string[] {
    return [...this.blockedIds].sort();
  }
}

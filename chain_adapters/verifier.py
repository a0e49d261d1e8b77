"""Python side of dvpsim's on-chain certificate verifiers: set-up arguments, calldata, deployment.

``OracleVerifier`` (BLS, EIP-2537) checks committee certificates made by
``consensus.report.make_certificate``; ``EcdsaVerifier`` is the OCR2-style comparison
(one secp256k1 signature per member, exactly ``requiredSignatures`` of them). This module
turns the Python objects into the contracts' arguments and back:

- committee set-up: compressed keys (48 B), their EIP-2537 encodings (128 B) and proofs of
  possession (256 B), admitted in batches of bounded gas, then ``setConfig``; the
  resulting :class:`consensus.report.CommitteeConfig` is checked against the digest the
  contract announced, so Python and Solidity can never silently disagree;
- certificates: ``(report bytes, signer bitmap, 256-byte EIP-2537 signature)``;
- revert data: decoded into the contract's custom error name and arguments.

Runners, benchmarks and tests use these helpers; the DvP escrow contracts inherit
``OracleVerifierBase`` and take the same set-up arguments.

This module must never sign anything but what it is given (keys come from the caller), never
compute a config digest differently from ``consensus.report.config_digest``, and never hide a
revert: failures surface as :class:`VerifierError` or the web3 exception, with the error name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.crypto import keccak

from chain_adapters.build import Artifact, compile_contracts
from chain_adapters.deploy import deploy
from consensus import eip2537
from consensus.report import (
    Certificate,
    CommitteeConfig,
    config_digest,
    default_threshold,
    encode_report,
)

__all__ = [
    "ADMIT_BATCH_SIZE",
    "ECDSA_CONFIG_DIGEST_PREFIX",
    "BlsCommitteeArgs",
    "CertificateCalldata",
    "EcdsaCommittee",
    "EcdsaSignatures",
    "RevertReason",
    "VerifierError",
    "admit_keys",
    "bls_committee_args",
    "certificate_calldata",
    "configure_bls_verifier",
    "configure_ecdsa_verifier",
    "decode_revert",
    "deploy_ecdsa_verifier",
    "deploy_oracle_verifier",
    "ecdsa_config_digest",
    "ecdsa_sign_report",
    "ecdsa_signatures",
    "revert_reason",
    "set_bls_committee",
    "submit_certificate",
    "submit_ecdsa_report",
    "verify_certificate_on_chain",
]

#: Keys admitted per transaction: ~170k gas each (hash-to-G2 + pairing + subgroup check),
#: so a batch stays near 3M gas, far below any block gas limit.
ADMIT_BATCH_SIZE: Final = 16
#: Gas limit per admitted key and per admitKeys transaction: measured ~210k per key on
#: anvil (Prague prices) plus margin; only what is used is paid.
ADMIT_GAS_PER_KEY: Final = 260_000
ADMIT_GAS_BASE: Final = 100_000
ECDSA_CONFIG_DIGEST_PREFIX: Final = b"\x0d\x02"
_TX_TIMEOUT: Final = 60


class VerifierError(Exception):
    """A verifier could not be set up or answered something Python did not expect."""


# --------------------------------------------------------------------------- revert data


@dataclass(frozen=True, slots=True)
class RevertReason:
    """A decoded custom error: its name and arguments, e.g. ``TooFewSigners(2, 3)``."""

    name: str
    args: tuple[Any, ...]

    def __str__(self) -> str:
        return f"{self.name}({', '.join(map(str, self.args))})"


def _error_selectors(abi: Sequence[dict[str, Any]]) -> dict[bytes, tuple[str, list[str]]]:
    selectors = {}
    for entry in abi:
        if entry.get("type") != "error":
            continue
        types = [abi_type(arg) for arg in entry.get("inputs", [])]
        signature = f"{entry['name']}({','.join(types)})"
        selectors[bytes(keccak(text=signature))[:4]] = (entry["name"], types)
    return selectors


def abi_type(arg: Mapping[str, Any]) -> str:
    """The canonical type of an ABI input (tuples spelled out), as selectors hash it."""
    kind = str(arg["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in arg["components"]) + ")" + kind[5:]
    return kind


def decode_revert(abi: Sequence[dict[str, Any]], data: bytes | str) -> RevertReason | None:
    """The custom error in revert ``data`` (bytes or 0x-hex), or None when the ABI lacks it."""
    raw = (
        bytes.fromhex(data[2:] if data.startswith("0x") else data)
        if isinstance(data, str)
        else data
    )
    known = _error_selectors(abi).get(raw[:4])
    if known is None:
        return None
    name, types = known
    return RevertReason(name, tuple(abi_decode(types, raw[4:])))


def revert_reason(abi: Sequence[dict[str, Any]], exc: BaseException) -> RevertReason | None:
    """The custom error carried by a web3 exception from a call or gas estimate, if any."""
    data = getattr(exc, "data", None)
    if isinstance(data, dict):  # some providers nest the revert data
        data = data.get("data")
    if isinstance(data, (bytes, str)) and len(data) >= 4:
        try:
            return decode_revert(abi, data)
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------- BLS committee


@dataclass(frozen=True, slots=True)
class BlsCommitteeArgs:
    """A committee's keys in the three forms the contract takes, packed in member order."""

    public_keys: bytes  # n * 48: compressed G1 (ZCash flags); hashed into the config digest
    public_keys_g1: bytes  # n * 128: EIP-2537 G1
    proofs_g2: bytes  # n * 256: EIP-2537 G2 proofs of possession; empty if not given

    @property
    def n(self) -> int:
        return len(self.public_keys) // 48


def bls_committee_args(
    public_keys: Sequence[bytes], proofs: Sequence[bytes] | None = None
) -> BlsCommitteeArgs:
    """Pack ``public_keys`` (48 B each) and optional ``proofs`` (96 B compressed each).
    Raises consensus.bls.BlsError for a key or proof that is not a valid point."""
    if proofs is not None and len(proofs) != len(public_keys):
        raise VerifierError(
            f"{len(proofs)} proofs of possession for {len(public_keys)} keys: give one per key"
        )
    return BlsCommitteeArgs(
        public_keys=b"".join(public_keys),
        public_keys_g1=b"".join(eip2537.encode_g1(pk) for pk in public_keys),
        proofs_g2=b"".join(eip2537.encode_g2(p) for p in proofs) if proofs is not None else b"",
    )


def _sender(w3: Any, sender: str | None) -> str:
    return sender or w3.eth.accounts[0]


def _transact(w3: Any, call: Any, sender: str | None, gas: int | None = None) -> Any:
    tx: dict[str, Any] = {"from": _sender(w3, sender)}
    if gas is not None:
        tx["gas"] = gas
    receipt = w3.eth.wait_for_transaction_receipt(call.transact(tx), timeout=_TX_TIMEOUT)
    return receipt


def deploy_oracle_verifier(
    w3: Any,
    artifacts: dict[str, Artifact] | None = None,
    *,
    sender: str | None = None,
    contract: str = "OracleVerifier",
) -> Any:
    """Deploy ``contract`` (OracleVerifier, or a contract built on OracleVerifierBase)."""
    artifacts = artifacts or compile_contracts()
    return deploy(w3, artifacts[contract], sender=_sender(w3, sender))


def admit_keys(
    verifier: Any,
    public_keys: Sequence[bytes],
    proofs: Sequence[bytes],
    *,
    sender: str | None = None,
    batch_size: int = ADMIT_BATCH_SIZE,
) -> list[Any]:
    """Admit every key not yet admitted, ``batch_size`` per transaction; returns receipts.
    A bad key or proof reverts its batch (MalformedPublicKey, InvalidProofOfPossession...)."""
    w3 = verifier.w3
    args = bls_committee_args(public_keys, proofs)
    pending = []
    for i in range(args.n):
        pk48 = args.public_keys[48 * i : 48 * (i + 1)]
        pk128 = args.public_keys_g1[128 * i : 128 * (i + 1)]
        if not verifier.functions.keyAdmitted(bytes(keccak(pk48 + pk128))).call():
            pending.append(i)
    receipts = []
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        call = verifier.functions.admitKeys(
            b"".join(args.public_keys[48 * i : 48 * (i + 1)] for i in batch),
            b"".join(args.public_keys_g1[128 * i : 128 * (i + 1)] for i in batch),
            b"".join(args.proofs_g2[256 * i : 256 * (i + 1)] for i in batch),
        )
        # One eth_call surfaces a bad key's custom error; then an explicit gas limit spares
        # the node a gas estimate (a binary search that runs every pairing ~20 times).
        call.call({"from": _sender(w3, sender)})
        receipt = _transact(w3, call, sender, ADMIT_GAS_BASE + ADMIT_GAS_PER_KEY * len(batch))
        if receipt["status"] != 1:
            raise VerifierError(
                f"admitKeys for members {batch[0]}..{batch[-1]} reverted (tx {receipt['transactionHash'].hex()})"
            )
        receipts.append(receipt)
    return receipts


def set_bls_committee(
    verifier: Any,
    public_keys: Sequence[bytes],
    f: int,
    t: int | None = None,
    *,
    unsafe_low_threshold: bool = False,
    sender: str | None = None,
) -> CommitteeConfig:
    """Call setConfig (keys must be admitted) and return the committee as Python sees it,
    after checking that its config digest equals the one the contract announced."""
    w3 = verifier.w3
    t = default_threshold(len(public_keys), f) if t is None else t
    args = bls_committee_args(public_keys)
    call = verifier.functions.setConfig(
        args.public_keys, args.public_keys_g1, f, t, unsafe_low_threshold
    )
    receipt = _transact(w3, call, sender)
    if receipt["status"] != 1:
        raise VerifierError(f"setConfig reverted (tx {receipt['transactionHash'].hex()})")
    events = verifier.events.ConfigSet().process_receipt(receipt)
    if len(events) != 1:
        raise VerifierError(f"setConfig emitted {len(events)} ConfigSet events, expected 1")
    announced = events[0]["args"]
    cfg = CommitteeConfig(
        chain_id=w3.eth.chain_id,
        verifier=bytes.fromhex(verifier.address[2:]),
        config_count=announced["configCount"],
        public_keys=tuple(public_keys),
        f=f,
        t=t,
    )
    if config_digest(cfg) != bytes(announced["configDigest"]):
        raise VerifierError(
            f"config digest mismatch at {verifier.address}: contract 0x{bytes(announced['configDigest']).hex()}, "
            f"Python 0x{config_digest(cfg).hex()}: the encodings of Python and Solidity differ"
        )
    return cfg


def configure_bls_verifier(
    verifier: Any,
    public_keys: Sequence[bytes],
    proofs: Sequence[bytes],
    f: int,
    t: int | None = None,
    *,
    unsafe_low_threshold: bool = False,
    sender: str | None = None,
    batch_size: int = ADMIT_BATCH_SIZE,
) -> CommitteeConfig:
    """Admit the keys that are not admitted yet, then set the committee (see above)."""
    admit_keys(verifier, public_keys, proofs, sender=sender, batch_size=batch_size)
    return set_bls_committee(
        verifier, public_keys, f, t, unsafe_low_threshold=unsafe_low_threshold, sender=sender
    )


# --------------------------------------------------------------------------- BLS certificates


@dataclass(frozen=True, slots=True)
class CertificateCalldata:
    """The arguments of verify / verifyAndRecord for one certificate."""

    report: bytes
    signers: int
    signature: bytes  # 256 B EIP-2537 G2

    def as_args(self) -> tuple[bytes, int, bytes]:
        return (self.report, self.signers, self.signature)


def certificate_calldata(cert: Certificate) -> CertificateCalldata:
    """Encode a certificate for the contract. Raises consensus.bls.BlsError when the
    aggregate signature is not a valid G2 point (it could not be encoded anyway)."""
    return CertificateCalldata(
        report=encode_report(cert.report),
        signers=cert.signers,
        signature=eip2537.encode_g2(cert.signature),
    )


def verify_certificate_on_chain(verifier: Any, cert: Certificate) -> bytes:
    """eth_call of verify: the report hash, or the web3 exception carrying the custom error
    (decode it with :func:`revert_reason`)."""
    return bytes(verifier.functions.verify(*certificate_calldata(cert).as_args()).call())


def submit_certificate(
    verifier: Any, cert: Certificate, *, sender: str | None = None, gas: int | None = None
) -> Any:
    """Send verifyAndRecord as a transaction and return its receipt (gasUsed is the cost of
    verifying the certificate on chain, transaction base cost and calldata included)."""
    call = verifier.functions.verifyAndRecord(*certificate_calldata(cert).as_args())
    return _transact(verifier.w3, call, sender, gas)


# --------------------------------------------------------------------------- ECDSA (OCR2-style)


@dataclass(frozen=True, slots=True)
class EcdsaCommittee:
    """An EcdsaVerifier committee: member i is ``signers[i]`` (20-byte address)."""

    chain_id: int
    verifier: bytes  # 20 B
    config_count: int
    signers: tuple[bytes, ...]
    f: int
    required_signatures: int

    @property
    def config_digest(self) -> bytes:
        return ecdsa_config_digest(self)


def ecdsa_config_digest(committee: EcdsaCommittee) -> bytes:
    """EcdsaVerifier's digest: like the BLS one over the padded signer addresses
    (abi.encodePacked of address[] pads each to 32 bytes), prefix 0x0d02."""
    signers_hash = keccak(b"".join(bytes(12) + s for s in committee.signers))
    encoded = abi_encode(
        ["uint256", "address", "uint64", "bytes32", "uint8", "uint8"],
        [
            committee.chain_id,
            committee.verifier,
            committee.config_count,
            signers_hash,
            committee.f,
            committee.required_signatures,
        ],
    )
    return ECDSA_CONFIG_DIGEST_PREFIX + bytes(keccak(encoded))[2:]


def deploy_ecdsa_verifier(
    w3: Any, artifacts: dict[str, Artifact] | None = None, *, sender: str | None = None
) -> Any:
    artifacts = artifacts or compile_contracts()
    return deploy(w3, artifacts["EcdsaVerifier"], sender=_sender(w3, sender))


def configure_ecdsa_verifier(
    verifier: Any,
    signers: Sequence[str],
    f: int,
    required_signatures: int | None = None,
    *,
    sender: str | None = None,
) -> EcdsaCommittee:
    """setConfig with member addresses (0x-hex), f and the exact signature count (OCR2:
    f+1, the default). Returns the committee, its digest checked against the contract's."""
    w3 = verifier.w3
    required = f + 1 if required_signatures is None else required_signatures
    checksummed = [w3.to_checksum_address(s) for s in signers]
    receipt = _transact(w3, verifier.functions.setConfig(checksummed, f, required), sender)
    if receipt["status"] != 1:
        raise VerifierError(f"EcdsaVerifier setConfig reverted at {verifier.address}")
    announced = verifier.events.ConfigSet().process_receipt(receipt)[0]["args"]
    committee = EcdsaCommittee(
        chain_id=w3.eth.chain_id,
        verifier=bytes.fromhex(verifier.address[2:]),
        config_count=announced["configCount"],
        signers=tuple(bytes.fromhex(s[2:]) for s in checksummed),
        f=f,
        required_signatures=required,
    )
    if committee.config_digest != bytes(announced["configDigest"]):
        raise VerifierError(
            f"ECDSA config digest mismatch at {verifier.address}: Python and Solidity encodings differ"
        )
    return committee


def ecdsa_sign_report(private_key: str | bytes, report: bytes) -> bytes:
    """65-byte r || s || v (v = 27 or 28) over keccak256(report), no message prefix, as
    OCR2 members sign. ``report`` is the encoded report."""
    signed = Account.unsafe_sign_hash(keccak(report), private_key)
    return signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v])


@dataclass(frozen=True, slots=True)
class EcdsaSignatures:
    """The signature arguments of EcdsaVerifier.verify: rs, ss and the compact vs."""

    rs: tuple[bytes, ...]
    ss: tuple[bytes, ...]
    vs: bytes  # one byte per signature: v - 27

    def as_args(self) -> tuple[list[bytes], list[bytes], bytes]:
        return (list(self.rs), list(self.ss), self.vs)


def ecdsa_signatures(signatures: Sequence[bytes]) -> EcdsaSignatures:
    """Split 65-byte signatures into the contract's rs / ss / vs arguments."""
    for i, sig in enumerate(signatures):
        if len(sig) != 65 or sig[64] not in (27, 28):
            raise VerifierError(f"ECDSA signature {i} is not 65 bytes r || s || v with v 27/28")
    return EcdsaSignatures(
        rs=tuple(sig[:32] for sig in signatures),
        ss=tuple(sig[32:64] for sig in signatures),
        vs=bytes(sig[64] - 27 for sig in signatures),
    )


def submit_ecdsa_report(
    verifier: Any,
    report: bytes,
    signatures: Sequence[bytes],
    *,
    sender: str | None = None,
    gas: int | None = None,
) -> Any:
    """Send EcdsaVerifier.verifyAndRecord as a transaction; returns the receipt."""
    call = verifier.functions.verifyAndRecord(report, *ecdsa_signatures(signatures).as_args())
    return _transact(verifier.w3, call, sender, gas)

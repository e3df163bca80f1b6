"""C2PA manifests on the files ``enliven animate`` writes (c2pa-python).

The manifest says the content was made by an AI model (a ``c2pa.created`` action whose
digitalSourceType is IPTC's trainedAlgorithmicMedia), by which enliven version, from which
inputs (the photo and the driving video, as SHA-256 hashes of their bytes only: no pixels,
names or thumbnails go in), and which watermark session id its frames carry.

Signing needs an X.509 certificate chain (PEM, the signer first) and its private key (PEM):
``SigningIdentity.from_files`` / the ``--c2pa-cert`` and ``--c2pa-key`` options /
``ENLIVEN_C2PA_CERT`` and ``ENLIVEN_C2PA_KEY``. Without them a *development* identity is made
on first use and kept in ``<cache_root()>/c2pa/``: a self-made CA and a leaf certificate whose
names say "enliven development (untrusted)". A manifest signed with it is intact and readable,
but no validator trusts its signer: it proves nothing about who made the file.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from enliven import __version__
from enliven.engine.defaults import cache_root
from enliven.engine.errors import EnlivenError

logger = logging.getLogger(__name__)

CERT_ENV = "ENLIVEN_C2PA_CERT"  # path of a PEM certificate chain (signer first)
KEY_ENV = "ENLIVEN_C2PA_KEY"  # path of the PEM private key of the signer
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
WATERMARK_ASSERTION = "org.enliven.watermark"  # label of the assertion naming the frames' watermark
DEV_SUBJECT = "enliven development signer (untrusted)"
_DEV_DIR = "c2pa"
_DEV_DAYS = 3650


class ProvenanceError(EnlivenError):
    """A C2PA manifest cannot be made, signed or read (bad certificate or key, unsupported file, ...)."""

    code = "provenance"


def _c2pa():  # type: ignore[no-untyped-def]
    try:
        import c2pa
    except ImportError as e:  # pragma: no cover - a core dependency
        raise ProvenanceError("C2PA signing needs the c2pa-python package (pip install c2pa-python)") from e
    return c2pa


@dataclass(frozen=True)
class SigningIdentity:
    """A certificate chain and its key, PEM, and whether it is enliven's development identity."""

    cert_chain_pem: bytes  # the signer's certificate first, then its issuers
    private_key_pem: bytes
    development: bool  # True: the self-made development identity (no validator trusts it)
    algorithm: str = "es256"  # c2pa's name of the signature algorithm the key makes

    @classmethod
    def from_files(cls, cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> SigningIdentity:
        """The identity in a PEM chain file and a PEM key file; ProvenanceError if unreadable or mismatched."""
        try:
            chain, key_pem = Path(cert).read_bytes(), Path(key).read_bytes()
        except OSError as e:
            raise ProvenanceError(f"expected a readable PEM certificate chain and key; {e}") from e
        return cls(chain, key_pem, development=False, algorithm=_algorithm_of(chain, key_pem))


def _algorithm_of(chain: bytes, key_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        certs = x509.load_pem_x509_certificates(chain)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as e:
        raise ProvenanceError(f"expected a PEM certificate chain and an unencrypted PEM private key; {e}") from e
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if certs[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ProvenanceError("the private key does not belong to the first certificate of the chain")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "es256", 384: "es384", 521: "es512"}.get(key.curve.key_size, "es256")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    raise ProvenanceError(f"expected an EC, Ed25519 or RSA key; got {type(key).__name__}")


def resolve_identity(cert: str | os.PathLike[str] | None = None,
                     key: str | os.PathLike[str] | None = None) -> SigningIdentity:
    """The identity to sign with: the given files, else $ENLIVEN_C2PA_CERT/KEY, else the development one."""
    cert = cert or os.environ.get(CERT_ENV) or None
    key = key or os.environ.get(KEY_ENV) or None
    if (cert is None) != (key is None):
        raise ProvenanceError(f"a C2PA certificate needs its key and a key its certificate (--c2pa-cert with "
                              f"--c2pa-key, or {CERT_ENV} with {KEY_ENV})")
    if cert is not None and key is not None:
        return SigningIdentity.from_files(cert, key)
    return development_identity()


def development_identity(folder: Path | None = None) -> SigningIdentity:
    """enliven's development identity, made on first use under ``<cache_root()>/c2pa`` (a CA + leaf, P-256)."""
    folder = folder or cache_root() / _DEV_DIR
    chain_path, key_path = folder / "dev-chain.pem", folder / "dev-key.pem"
    if not (chain_path.exists() and key_path.exists()):
        chain, key = _make_development_chain()
        folder.mkdir(parents=True, exist_ok=True)
        for path, data, mode in ((key_path, key, 0o600), (chain_path, chain, 0o644)):
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(partial, path)
        logger.warning("made a development C2PA signing certificate in %s: manifests signed with it are "
                       "not trusted by any validator; pass --c2pa-cert/--c2pa-key to sign as yourself", folder)
    return SigningIdentity(chain_path.read_bytes(), key_path.read_bytes(), development=True)


def _make_development_chain() -> tuple[bytes, bytes]:
    """(chain PEM: leaf then CA, leaf key PEM) of a fresh self-made CA and signer, both P-256."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=_DEV_DAYS)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "enliven development (untrusted)"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("enliven development CA (untrusted)")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(name(DEV_SUBJECT)).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return chain, key_pem


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Ingredient:
    """An input of the file, recorded by its hash only."""

    role: str  # what it was: "photo" or "driving video"
    sha256: str  # hex SHA-256 of the input file's bytes ("builtin:<name>" inputs hash enliven's asset)
    media_type: str  # e.g. image/png, video/mp4


def manifest_definition(ingredients: list[Ingredient], watermark_session: str | None) -> dict[str, object]:
    """The manifest's JSON definition: the AI-generation action, the tool, the inputs' hashes, the watermark."""
    assertions: list[dict[str, object]] = [{
        "label": "c2pa.actions.v2",
        "data": {"actions": [{
            "action": "c2pa.created",
            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
            "softwareAgent": {"name": "enliven", "version": __version__},
            "description": "Portrait animation: a photo animated by a driving motion (AI-generated, synthetic media)",
        }]},
    }]
    if watermark_session is not None:
        assertions.append({"label": WATERMARK_ASSERTION,
                           "data": {"scheme": "enliven-tiled-spread-spectrum", "session": watermark_session}})
    return {
        "claim_generator_info": [{"name": "enliven", "version": __version__}],
        "title": "AI-generated with enliven",
        "format": "video/mp4",
        "assertions": assertions,
        "ingredients": [{"title": f"{i.role} (sha256 {i.sha256})", "format": i.media_type,
                         "relationship": "inputTo", "hash": i.sha256,
                         "description": f"the {i.role} given to enliven, recorded by its SHA-256 only"}
                        for i in ingredients],
    }


C2PA_MEDIA_TYPES = frozenset({"video/mp4", "video/quicktime"})  # outputs enliven signs (BMFF containers)
_MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
                ".gif": "image/gif", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".webp": "image/webp"}


def media_type_of(path: str | os.PathLike[str]) -> str:
    return _MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def sign_file(path: str | os.PathLike[str], ingredients: list[Ingredient], identity: SigningIdentity,
              *, watermark_session: str | None = None, media_type: str = "video/mp4") -> None:
    """Embed a signed C2PA manifest into the file at ``path`` (rewritten in place, atomically).

    Raises: ProvenanceError when c2pa cannot sign (bad certificate or key, unsupported file).
    """
    c2pa = _c2pa()
    path = Path(path)
    partial = path.with_name(f".{path.name}.c2pa.partial")
    definition = manifest_definition(ingredients, watermark_session)
    try:
        info = c2pa.C2paSignerInfo(identity.algorithm.encode(), identity.cert_chain_pem, identity.private_key_pem,
                                   None)
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(json.dumps(definition)) as builder:
            with open(path, "rb") as source, open(partial, "w+b") as dest:
                builder.sign(signer, media_type, source, dest)
        os.replace(partial, path)
    except c2pa.C2paError as e:
        raise ProvenanceError(f"could not sign {path} with a C2PA manifest ({e})") from e
    finally:
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class ManifestReport:
    """What a file's C2PA manifest says, as far as verify reports it."""

    present: bool
    validation_state: str | None  # c2pa's: "Invalid", "Valid" or "Trusted" (None without a manifest)
    ai_generated: bool  # a c2pa.created/... action with digitalSourceType trainedAlgorithmicMedia
    generator: str | None  # claim generator, e.g. "enliven 0.1.0"
    signer: str | None  # the signing certificate's issuer or subject as c2pa reports it
    watermark_session: str | None  # from the org.enliven.watermark assertion
    errors: tuple[str, ...]  # validation failure codes other than an untrusted signer


def read_manifest(path: str | os.PathLike[str]) -> ManifestReport:
    """The active C2PA manifest of a file (``present=False`` when it has none or c2pa cannot read the format)."""
    c2pa = _c2pa()
    none = ManifestReport(False, None, False, None, None, None, ())
    try:
        with c2pa.Reader(os.fspath(path)) as reader:
            manifest = reader.get_active_manifest()
            state = reader.get_validation_state()
            store = json.loads(reader.json())
    except c2pa.C2paError:
        return none
    if manifest is None:
        return none
    ai = False
    watermark = None
    for assertion in manifest.get("assertions", []):
        label = assertion.get("label", "")
        if label.startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                ai |= action.get("digitalSourceType") == TRAINED_ALGORITHMIC_MEDIA
        elif label == WATERMARK_ASSERTION:
            watermark = assertion.get("data", {}).get("session")
    info = manifest.get("claim_generator_info") or [{}]
    generator = " ".join(str(info[0].get(k)) for k in ("name", "version") if info[0].get(k)) or None
    sig = manifest.get("signature_info") or {}
    errors = tuple(s.get("code", "?") for s in store.get("validation_status", []) or []
                   if s.get("code") != "signingCredential.untrusted")
    return ManifestReport(True, state, ai, generator, sig.get("common_name") or sig.get("issuer"), watermark, errors)

"""py-spiffe against the two agents of `fedhub demo`: one-shot calls of every kind.

Usage: python py_spiffe_fetch.py --alpha-socket PATH --beta-socket PATH

Against alpha.test's socket it fetches the X.509 context, the X.509 bundles, a JWT-SVID and the
JWT bundles; then it fetches a JWT-SVID from beta.test's socket and has alpha.test's agent
validate it (and refuse it for another audience), and validates it locally against the
federated JWT bundle py-spiffe received. Prints what it saw as JSON; the Rust test asserts.
"""

import argparse

from spiffe import JwtSvid, TrustDomain, WorkloadApiClient
from spiffe.workloadapi.errors import ValidateJwtSvidError

from common import TIMEOUT, emit, fail, step

ALPHA_ID = "spiffe://alpha.test/web"
BETA_ID = "spiffe://beta.test/echo"


def trust_domains(bundle_set):
    return sorted(bundle.trust_domain.name for bundle in bundle_set.bundles)


def audiences(svid):
    # The `aud` claim is a string or a list of strings.
    audience = svid.audience
    return [audience] if isinstance(audience, str) else sorted(audience)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alpha-socket", required=True)
    parser.add_argument("--beta-socket", required=True)
    args = parser.parse_args()

    # py-spiffe takes the socket as SPIFFE_ENDPOINT_SOCKET does: unix://<absolute path>.
    alpha = step(
        "connecting to alpha.test's socket",
        lambda: WorkloadApiClient(f"unix://{args.alpha_socket}", default_timeout=TIMEOUT),
    )
    beta = step(
        "connecting to beta.test's socket",
        lambda: WorkloadApiClient(f"unix://{args.beta_socket}", default_timeout=TIMEOUT),
    )

    context = step("FetchX509SVID (fetch_x509_context) on alpha.test", alpha.fetch_x509_context)
    x509_bundles = step(
        "FetchX509Bundles (fetch_x509_bundles) on alpha.test", alpha.fetch_x509_bundles
    )
    jwt_svid = step(
        "FetchJWTSVID (fetch_jwt_svid) on alpha.test",
        lambda: alpha.fetch_jwt_svid({BETA_ID}),
    )
    jwt_bundles = step(
        "FetchJWTBundles (fetch_jwt_bundles) on alpha.test", alpha.fetch_jwt_bundles
    )

    beta_token = step(
        "FetchJWTSVID (fetch_jwt_svid) on beta.test",
        lambda: beta.fetch_jwt_svid({ALPHA_ID}).token,
    )
    validated = step(
        "ValidateJWTSVID (validate_jwt_svid) of beta.test's token on alpha.test",
        lambda: alpha.validate_jwt_svid(beta_token, ALPHA_ID),
    )
    try:
        alpha.validate_jwt_svid(beta_token, "spiffe://alpha.test/someone-else")
        fail("ValidateJWTSVID for the wrong audience", "alpha.test's agent accepted the token")
    except ValidateJwtSvidError as error:
        wrong_audience_error = str(error)

    beta_jwt_bundle = jwt_bundles.get_bundle_for_trust_domain(TrustDomain("beta.test"))
    if beta_jwt_bundle is None:
        fail("local JWT-SVID validation", "alpha.test's JWT bundles have no beta.test bundle")
    locally_validated = step(
        "local JWT-SVID validation against the federated beta.test JWT bundle",
        lambda: JwtSvid.parse_and_validate(beta_token, beta_jwt_bundle, {ALPHA_ID}),
    )

    alpha.close()
    beta.close()
    emit(
        {
            "x509_svid_id": str(context.default_svid.spiffe_id),
            "x509_context_trust_domains": trust_domains(context.x509_bundle_set),
            "x509_bundles_trust_domains": trust_domains(x509_bundles),
            "jwt_svid_id": str(jwt_svid.spiffe_id),
            "jwt_svid_audience": audiences(jwt_svid),
            "jwt_bundles_trust_domains": trust_domains(jwt_bundles),
            "beta_token_validated_by_alpha": str(validated.spiffe_id),
            "beta_token_wrong_audience_error": wrong_audience_error,
            "beta_token_validated_locally": str(locally_validated.spiffe_id),
        }
    )


if __name__ == "__main__":
    main()

"""AUTOPAR_API_TOKEN: every route but health needs the bearer token once it is set."""

from __future__ import annotations

from api_support import SMALL_ESTIMATE, assert_problem

from api.settings import ApiSettings

TOKEN = "s3cret-token"


def test_token_guards_every_route_but_health(make_client, sqlite_url) -> None:
    client = make_client(sqlite_url, api_token=TOKEN)
    assert client.get("/v1/health").status_code == 200
    for method, path in [
        ("get", "/v1/models"),
        ("get", "/v1/gpus"),
        ("get", "/v1/clusters"),
        ("post", "/v1/estimate"),
        ("post", "/v1/plans"),
        ("get", "/v1/plans/abc"),
        ("delete", "/v1/plans/abc"),
        ("get", "/v1/openapi.json"),
    ]:
        response = client.request(method, path, json=SMALL_ESTIMATE)
        body = assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        assert "none was given" in body["detail"]
    wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert "wrong" in assert_problem(wrong, 401, "unauthorized")["detail"]
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/v1/models", headers=right).status_code == 200
    assert client.post("/v1/estimate", json=SMALL_ESTIMATE, headers=right).status_code == 200
    assert client.get("/v1/openapi.json", headers=right).status_code == 200


def test_token_comes_from_the_environment(monkeypatch, sqlite_url) -> None:
    monkeypatch.setenv("AUTOPAR_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("AUTOPAR_API_TOKEN", TOKEN)
    assert ApiSettings.from_env().api_token == TOKEN
    monkeypatch.setenv("AUTOPAR_API_TOKEN", " ")
    assert ApiSettings.from_env().api_token is None
    assert TOKEN not in repr(ApiSettings(database_url="sqlite://", api_token=TOKEN))


def test_the_schema_documents_the_token_only_when_one_is_set(make_client, sqlite_url) -> None:
    right = {"Authorization": f"Bearer {TOKEN}"}
    guarded = make_client(sqlite_url, api_token=TOKEN).get("/v1/openapi.json", headers=right)
    assert "HTTPBearer" in guarded.json()["components"]["securitySchemes"]
    assert guarded.json()["paths"]["/v1/models"]["get"]["security"] == [{"HTTPBearer": []}]
    open_schema = make_client(sqlite_url).get("/v1/openapi.json").json()
    assert "securitySchemes" not in open_schema["components"]


def test_serve_refuses_a_malformed_database_url(run_cli) -> None:
    result = run_cli("serve", "--database-url", "not a url")
    assert result.exit_code == 2
    assert result.stderr.startswith("autopar: error: --database-url: 'not a url'")

async def test_health(anonymous):
    r = await anonymous.get("/healthz")
    assert r.status_code == 200


async def test_list_keys(client):
    r = await client.get("/v1/api-keys")
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 1

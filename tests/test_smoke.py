from conftest import HTTP_API_KEY


def test_submit_and_status(connect, app_with_key):
    token = connect.token(app_with_key, "u1")
    rid = connect.requirement_id(app_with_key, "helpdesk")
    assert connect.statuses(token) == {rid: "pending"}
    r = connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "https://h.example.com", "api_key": "k1"})
    assert r.status_code == 201, r.get_json()
    assert r.get_json() == {"message": "created"}
    assert connect.statuses(token) == {rid: "completed"}

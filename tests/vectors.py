"""The signature test vectors of protocol section 3.3."""

SECRET = b"wh_sec_3kfj9dmfkg8s2"

KAPSO_BODY = (
    '{"message":{"id":"wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUY5","timestamp":"1730092800",'
    '"type":"text","text":{"body":"Hola ¿qué tal? 👋"},"kapso":{"direction":"inbound",'
    '"status":"received","processing_status":"pending","origin":"cloud_api","has_media":false}},'
    '"conversation":{"id":"c63ced48-1283-4d55-8c8d-930f525aa0e5","phone_number":"+15551234567",'
    '"status":"active","phone_number_id":"123456789012345"},"is_new_conversation":true,'
    '"phone_number_id":"123456789012345"}'
).encode()
KAPSO_SIGNATURE = "5c5fb262c55f9e702c2c29bb53cf9b7d4cceca67af47a0ef5f84f28fcd892a06"
KAPSO_RESERIALISED_SIGNATURE = "4c4ea8b035ac7030725fa12fee09376bd2ecf78829d401007e43db219303f28f"

META_BODY = (
    b'{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":'
    b'{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881",'
    b'"phone_number_id":"106540352242922"},"statuses":[{"id":'
    b'"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=","status":"read",'
    b'"timestamp":"1750030200","recipient_id":"16505551234"}]},"field":"messages"}]}]}'
)
META_SHA256 = "d9499ef16cf85a078c979c2f53d43ecb3ec891f223d1abd64108f54d22a75cc6"
META_SIGNATURE = "131b280edb1d810d485b32fc63024040c08f6bb56419e514ebfdd19c6aaf3350"

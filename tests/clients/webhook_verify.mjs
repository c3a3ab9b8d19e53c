// A Node webhook receiver's check, with the npm `standardwebhooks` package: verify one
// captured delivery, read as JSON {"secret", "headers", "body_base64"} on stdin (the body
// in base64, so its bytes arrive exactly as sent). Exits 0 and prints the payload's id
// when the signature verifies, 1 and the reason when it does not.
import { Webhook } from "standardwebhooks";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const { secret, headers, body_base64: body } = JSON.parse(Buffer.concat(chunks).toString());

try {
  const payload = new Webhook(secret).verify(Buffer.from(body, "base64"), headers);
  console.log(JSON.stringify({ verified: true, id: payload.id }));
} catch (error) {
  console.log(JSON.stringify({ verified: false, error: error.message }));
  process.exitCode = 1;
}

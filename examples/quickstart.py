"""The API guide's two-dogs conversation, kept by convstore, and the `input` of the next request."""

import json
import os
import tempfile

import convstore

path = os.path.join(tempfile.mkdtemp(), "chat.db")
store = convstore.Store(f"sqlite:///{path}")

conv = store.create_conversation(model="gemini-3-flash-preview")

# Turn 1: what we sent, and the steps the model returned (verbatim, thought signature included).
conv.append(
    [
        {"type": "user_input", "content": [{"type": "text", "text": "I have 2 dogs in my house."}]},
        {"type": "thought", "signature": "EpYCCpMCAb4+9vuJ2kQx7Lw0mZp3sQyT"},
        {"type": "model_output", "content": [{"type": "text", "text": "Two dogs! They must keep you busy."}]},
    ]
)

# Turn 2: the request replays the whole history, then the new question.
question = {"type": "user_input", "content": [{"type": "text", "text": "How many paws are in my house?"}]}
body = {"model": conv.model, "store": False, "input": [*conv.history(), question]}
print(json.dumps(body["input"], indent=2))

# Branch: ask something else after turn 1, without copying anything.
alt = conv.fork(branch="cats")
alt.append([{"type": "user_input", "content": [{"type": "text", "text": "I also have a cat."}]}])
print(conv.tree().render())
store.close()

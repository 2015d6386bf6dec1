import { LiveReadStates, ReadStateClient, ReadStateError } from "@readstate/client";

export async function example(baseUrl: string): Promise<void> {
  const client = new ReadStateClient({ baseUrl });

  // User 1 writes in channel 10, mentioning user 2, who joined with nothing read.
  await client.join(2, 10, { last_read_message_id: 0 });
  await client.createMessage(10, { message_id: "100", author_id: 1, mentions: [2n] });
  const state = await client.getReadState(2, 10);
  console.log(state.unread_count, state.mention_count); // 1 1

  // Keep user 2's read states in memory, current as other devices act.
  const live = new LiveReadStates({ client, userId: 2 });
  await live.start();
  const unsubscribe = live.onChange((states) => {
    console.log("channel 10 unread:", states.get("10")?.unread_count);
  });
  await client.ack(2, 10, { message_id: 100 }); // another device reads; the listener sees 0
  await until(() => live.get(10)?.unread_count === 0);
  console.log(live.summary()); // { unread_channels: 0, unread_threads: 0, mentions: 0 }
  unsubscribe();
  await live.stop();

  // Errors are RFC 9457 problems.
  try {
    await client.getReadState(2, 11);
  } catch (error) {
    if (error instanceof ReadStateError) console.log(error.status, error.kind); // 404 not-found
  }
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 10));
}

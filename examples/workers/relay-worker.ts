/** One hop of the relay: wait for each inbound point, then signal the next timeline. */
import { parentPort } from 'node:worker_threads';
import * as U from 'dmabuf/uapi';

parentPort!.once('message', ({ laps, packet }: { laps: number; packet: U.FdPacket }) => {
  const [inbound, outbound] = U.receiveFds(packet) as [number, number];
  for (let lap = 1; lap <= laps; lap++) {
    const pt = { value: lap, fence: -1 };
    U.ioctl(inbound, U.SW_SYNC_IOC_CREATE_FENCE, pt);
    U.poll([{ fd: pt.fence, events: U.POLLIN }], -1);
    U.close(pt.fence);
    U.ioctl(outbound, U.SW_SYNC_IOC_INC, 1);
  }
  U.close(inbound);
  U.close(outbound);
});

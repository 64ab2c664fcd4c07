package dev.beamport.flink;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.pipeline.v1.Endpoints.ApiServiceDescriptor;
import org.apache.beam.sdk.fn.server.GrpcContextHeaderAccessorProvider;
import org.apache.beam.sdk.fn.server.ServerFactory;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;
import org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.net.HostAndPort;

/**
 * Beam's default server factory binds its gRPC servers to every interface, whatever host their URL names. The
 * job server's Job API and artifact staging take pipelines to run, so the job server Beamport starts serves them
 * on loopback only, through this factory: the same servers (message size, keep-alive, header interceptor), bound
 * to the loopback address.
 */
final class LoopbackServerFactory extends ServerFactory {
  private static final long KEEP_ALIVE_TIME_SEC = 20;

  @Override
  public Server allocateAddressAndCreate(List<BindableService> services, ApiServiceDescriptor.Builder builder)
      throws IOException {
    Server server = start(services, 0);
    builder.setUrl(HostAndPort.fromParts("localhost", server.getPort()).toString());
    return server;
  }

  @Override
  public Server create(List<BindableService> services, ApiServiceDescriptor descriptor) throws IOException {
    return start(services, HostAndPort.fromString(descriptor.getUrl()).getPort());
  }

  private static Server start(List<BindableService> services, int port) throws IOException {
    NettyServerBuilder builder =
        NettyServerBuilder.forAddress(new InetSocketAddress(InetAddress.getLoopbackAddress(), port))
            .maxInboundMessageSize(Integer.MAX_VALUE)
            .permitKeepAliveTime(KEEP_ALIVE_TIME_SEC, TimeUnit.SECONDS);
    for (BindableService service : services) {
      builder.addService(ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
    }
    return builder.build().start();
  }
}

package dev.beamport.pipelines;

import java.util.Map;
import java.util.TreeMap;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.io.gcp.pubsub.PubsubIO;
import org.apache.beam.sdk.io.gcp.pubsub.PubsubMessage;
import org.apache.beam.sdk.io.gcp.pubsub.PubsubMessageWithAttributesCoder;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.StreamingOptions;
import org.apache.beam.sdk.options.Validation;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ParDo;

/**
 * A streaming Java Pub/Sub pipeline that reads messages with their attributes and ids (PubsubIO's
 * readMessagesWithAttributesAndMessageId) and publishes, for each, its data, its attributes (sorted) and whether it
 * had a message id, as text; and republishes the message with an attribute of its own (writeMessages).
 */
public class PubsubAttributes {
  /** Where the messages come from and go. */
  public interface Options extends StreamingOptions {
    @Description("The subscription to read (projects/P/subscriptions/S)")
    @Validation.Required
    String getInputSubscription();

    void setInputSubscription(String value);

    @Description("The topic the descriptions go to (projects/P/topics/T)")
    @Validation.Required
    String getOutput();

    void setOutput(String value);

    @Description("The topic the messages are republished to, with an attribute added (projects/P/topics/T)")
    @Validation.Required
    String getRepublished();

    void setRepublished(String value);
  }

  /** A message as text: data|key=value,...|id (whether it had one). */
  static class Describe extends DoFn<PubsubMessage, String> {
    @ProcessElement
    public void processElement(@Element PubsubMessage message, OutputReceiver<String> out) {
      Map<String, String> attributes = new TreeMap<>(message.getAttributeMap());
      StringBuilder text = new StringBuilder(new String(message.getPayload(), java.nio.charset.StandardCharsets.UTF_8));
      text.append('|');
      String separator = "";
      for (Map.Entry<String, String> entry : attributes.entrySet()) {
        text.append(separator).append(entry.getKey()).append('=').append(entry.getValue());
        separator = ",";
      }
      String id = message.getMessageId();
      text.append('|').append(id != null && !id.isEmpty() ? "id" : "no-id");
      out.output(text.toString());
    }
  }

  /** The message again, with an attribute saying it went through here. */
  static class Mark extends DoFn<PubsubMessage, PubsubMessage> {
    @ProcessElement
    public void processElement(@Element PubsubMessage message, OutputReceiver<PubsubMessage> out) {
      Map<String, String> attributes = new TreeMap<>(message.getAttributeMap());
      attributes.put("via", "beamport");
      out.output(new PubsubMessage(message.getPayload(), attributes));
    }
  }

  public static void main(String[] args) {
    Options options =
        org.apache.beam.sdk.options.PipelineOptionsFactory.fromArgs(args).withValidation().as(Options.class);
    options.setStreaming(true);
    Pipeline pipeline = Pipeline.create(options);
    org.apache.beam.sdk.values.PCollection<PubsubMessage> messages =
        pipeline.apply(
            "Read",
            PubsubIO.readMessagesWithAttributesAndMessageId().fromSubscription(options.getInputSubscription()));
    messages
        .apply("Describe", ParDo.of(new Describe()))
        .apply("Write", PubsubIO.writeStrings().to(options.getOutput()));
    messages
        .apply("Mark", ParDo.of(new Mark()))
        .setCoder(PubsubMessageWithAttributesCoder.of()) // (its input's coder would want a message id)
        .apply("Republish", PubsubIO.writeMessages().to(options.getRepublished()));
    pipeline.run();
    System.out.println("SUBMITTED");
  }
}
